"""Bad inputs across every command: one clear error line, the right exit status, nothing partial, inputs intact.

Each case runs ``cellinr <command> ...`` in-process on a shared set of small, valid inputs (a simulated
data set, its prepared SDFs, a tiny trained run, 2D masks and images, a descriptor table, a reference
experiment folder) plus the case's own broken file. Every case checks:

- the exit status (2: the user's input or parameter, 1: the operating system refused an output);
- no traceback, and exactly one ``cellinr <command>: error: ...`` line (warnings may come first),
  matching the case's expected words;
- nothing partial: the output does not exist afterwards (or is unchanged), and no temporary or
  staging entry is left beside it;
- every input is unchanged, byte for byte (hashes of the whole input tree before and after).

The file is long because the table is (one entry per case, grouped by command).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from cellinr.cli import main
from cellinr.io.tiff import write_tiff

ROOT_ONLY = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (mount)")


# ----------------------------------------------------------------------------------------------
# shared inputs (built once)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small valid inputs for every command (about 15 s to build on a shared machine)."""
    import torch

    from cellinr.data.preparation import prepare
    from cellinr.data.simulation.phantoms import simulate
    from cellinr.measurement.tables import measure
    from cellinr.training.shape import train

    root = tmp_path_factory.mktemp("inputs")
    simulate(root / "sim", kind="deforming", sequences=2, frames=3, size=16, seed=0)
    prepare(root / "sim", root / "ds", size=16, clamp=4.0, preview=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(root / "ds", root / "run", preset="tiny", epochs=2, device="cpu", progress=False)
    finally:
        torch.set_num_threads(n)
    measure(root / "sim", root / "table.csv")
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 32, 32), np.uint16)
    labels[:, 8:16, 8:16] = 1
    labels[:, 18:28, 16:26] = 2
    (root / "masks2d").mkdir()
    write_tiff(root / "masks2d" / "a.tif", labels, axes="TYX")
    image = (rng.random((32, 32)) * 100 + labels[0] * 200).astype(np.uint16)
    write_tiff(root / "img.tif", image, axes="YX")
    write_tiff(root / "mask.tif", labels[0], axes="YX")
    (root / "ctc").mkdir()
    for t in range(3):
        frame = np.zeros((8, 16, 16), np.uint16)
        frame[2:6, 4:10, 4:10] = 1
        write_tiff(root / "ctc" / f"mask{t:03d}.tif", frame, axes="ZYX")
    _reference_experiment(root / "exp")
    return root


def _reference_experiment(exp: Path) -> None:
    import scipy.io
    import torch

    from cellinr.model.config import ModelConfig
    from cellinr.nn.decoder import AutoDecoder

    (exp / "ModelParameters").mkdir(parents=True)
    (exp / "LatentCodes").mkdir()
    cfg = ModelConfig(latent_dim=8, hidden=[32, 32, 32], latent_in=[2], xyz_in_all=False)
    decoder = AutoDecoder.from_config(cfg)
    linears = [layer.linear for layer in decoder.layers] + [decoder.output]
    state = {}
    for k, lin in enumerate(linears):
        state[f"lin{k}.weight"] = lin.weight.detach().clone()
        state[f"lin{k}.bias"] = lin.bias.detach().clone()
    torch.save({"model_state_dict": state}, exp / "ModelParameters" / "latest.pth")
    specs = {"CodeLength": 8, "NetworkSpecs": {"dims": [32, 32, 32], "latent_in": [2], "xyz_in_all": False}}
    (exp / "specs.json").write_text(json.dumps(specs))
    scipy.io.savemat(exp / "LatentCodes" / "lat_vecs.mat", {"lat_vecs": np.zeros((2, 8))})


def _tree_hash(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel] = "dir"
    return out


# ----------------------------------------------------------------------------------------------
# the table


@dataclass
class Case:
    command: str
    name: str
    argv: list  # tokens; "{I}" -> the shared inputs folder, "{W}" -> the case's own folder
    match: str  # regular expression the error line must contain
    rc: int = 2
    setup: object = None  # setup(work: Path, inputs: Path) writes the case's broken files
    output: str | None = "{W}/out"  # what must not appear (None: no output to check)
    marks: list = field(default_factory=list)


def _bytes(rel: str, data: bytes):
    def setup(w, i):
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).write_bytes(data)
    return setup


def _copy(src: str, dst: str, edit=None):
    """Copy an input (file or folder) into the case folder, then ``edit(path)``."""
    def setup(w, i):
        s, d = i / src, w / dst
        shutil.copytree(s, d) if s.is_dir() else shutil.copy2(s, d)
        if edit is not None:
            edit(d)
    return setup


def _json_edit(rel: str, change):
    def edit(folder):
        path = folder / rel
        data = json.loads(path.read_text())
        data = change(data)
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return edit


def _set(keys, value):
    def change(data):
        d = data
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
        return data
    return change


def _del(keys):
    def change(data):
        d = data
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
        return data
    return change


def _tensors(rel: str, change):
    def edit(folder):
        from safetensors.torch import load_file, save_file

        path = folder / rel
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path))
    return edit


def _nan_latents(t):
    t["latents"][0, 0] = float("nan")


def _bad_rotations(t):
    t["rotations"][0] = t["rotations"][0] * 2.0


def _write_tif(rel, array, axes):
    def setup(w, i):
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        write_tiff(w / rel, array, axes=axes)
    return setup


def _ctc_gap(w, i):
    folder = w / "gap"
    folder.mkdir()
    for t in (0, 1, 3):
        shutil.copy2(i / "ctc" / "mask000.tif", folder / f"mask{t:03d}.tif")


def _prepare_like(out: Path, inputs: Path, **options):
    """The shared simulation prepared as the shared data set was (size 16, clamp 4), ``options`` changed."""
    from cellinr.data.preparation import prepare

    prepare(inputs / "sim", out, **{"size": 16, "clamp": 4.0, "preview": False, "progress": False, **options})


def _run_voxel(inputs: Path) -> float:
    return json.loads((inputs / "run" / "manifest.json").read_text())["voxel_size_um"]


def _ball_dataset(folder: Path, radius: float, size: int = 16, frames: int = 3, clamp: float = 4.0) -> Path:
    """A one-sequence SDF data set of a ball of ``radius`` voxels growing by 5 % a frame (voxel size 0.5 um)."""
    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence

    folder.mkdir(parents=True)
    c = np.arange(size) - (size - 1) / 2
    r = np.sqrt(sum(a**2 for a in np.meshgrid(c, c, c, indexing="ij")))
    sdf = [(np.clip(r - radius * 1.05**t, -clamp, clamp) / clamp).astype(np.float32) for t in range(frames)]
    write_sequence(folder / "ball.h5", sdf, n_frames=frames, shape=(size,) * 3)
    write_manifest(folder, new_manifest(size=size, clamp=clamp, voxel_size_um=0.5, scale_um_per_unit=clamp * 0.5,
                                        sequences=[{"name": "ball", "file": "ball.h5", "frames": frames,
                                                    "shape": [size] * 3}]))
    return folder


def _file(rel="afile"):
    return _bytes(rel, b"not a folder\n")


def _h5(rel, key, array):
    def setup(w, i):
        import h5py

        with h5py.File(w / rel, "w") as f:
            f[key] = array
    return setup


def _yaml(text):
    return _bytes("c.yaml", text.encode() if isinstance(text, str) else text)


def _groups(data):
    return _bytes("g.json", data if isinstance(data, bytes) else json.dumps(data).encode())


LONG = "n" * 300
VOL3D = np.zeros((4, 16, 16), np.uint8)
VOL3D[1:3, 4:10, 4:10] = 1
NAN2D = np.full((8, 8), np.nan, np.float32)

CASES = [
    # ---- prepare
    Case("prepare", "missing input", ["prepare", "{W}/nothing.tif", "--out", "{W}/out", "--size", "16"], r"no such file"),
    Case("prepare", "out is the input", ["prepare", "{I}/sim", "--out", "{I}/sim", "--size", "16", "--overwrite"],
         r"is the input", output=None),
    Case("prepare", "out inside the input", ["prepare", "{I}/sim", "--out", "{I}/sim/prepared", "--size", "16"],
         r"lies inside the input", output="{I}/sim/prepared"),
    Case("prepare", "out contains the input", ["prepare", "{W}/box/sim", "--out", "{W}/box", "--size", "16", "--overwrite"],
         r"contains the input", setup=lambda w, i: shutil.copytree(i / "sim", w / "box" / "sim"), output=None),
    Case("prepare", "size too small", ["prepare", "{I}/sim", "--out", "{W}/out", "--size", "8"], r"size.*>= 16"),
    Case("prepare", "size beyond memory", ["prepare", "{I}/sim", "--out", "{W}/out", "--size", "20000"],
         r"needs about .* GiB"),
    Case("prepare", "frame numbers with gaps", ["prepare", "{W}/gap", "--out", "{W}/out", "--size", "16"],
         r"gaps \(missing 002\)", setup=_ctc_gap),
    Case("prepare", "corrupt TIFF", ["prepare", "{W}/bad.tif", "--out", "{W}/out", "--size", "16"],
         r"bad\.tif", setup=_bytes("bad.tif", b"II*\x00" + b"\xff" * 64)),
    Case("prepare", "NaN labels", ["prepare", "{W}/nan.tif", "--out", "{W}/out", "--size", "16"], r"NaN",
         setup=_write_tif("nan.tif", np.full((4, 8, 8), np.nan, np.float32), "ZYX")),
    Case("prepare", "empty mask", ["prepare", "{W}/empty.tif", "--out", "{W}/out", "--size", "16"], r"all frames are empty",
         setup=_write_tif("empty.tif", np.zeros((4, 8, 8), np.uint8), "ZYX")),
    Case("prepare", "2D image for 3D masks", ["prepare", "{I}/img.tif", "--out", "{W}/out", "--size", "16"],
         r"img\.tif"),
    Case("prepare", "HDF5 without the dataset", ["prepare", "{W}/x.h5", "--out", "{W}/out", "--size", "16",
                                                 "--dataset", "labels"], r"x\.h5",
         setup=_h5("x.h5", "other", np.zeros((4, 8, 8), np.uint8))),
    Case("prepare", "zero spacing", ["prepare", "{I}/sim", "--out", "{W}/out", "--size", "16", "--spacing", "0", "1", "1"],
         r"spacing"),
    Case("prepare", "NaN spacing", ["prepare", "{I}/sim", "--out", "{W}/out", "--size", "16", "--spacing", "nan", "1", "1"],
         r"spacing"),
    Case("prepare", "output exists", ["prepare", "{I}/sim", "--out", "{W}/out", "--size", "16"], r"exists",
         setup=_file("out/keep.txt"), output=None),
    Case("prepare", "output is a file", ["prepare", "{I}/sim", "--out", "{W}/afile", "--size", "16", "--overwrite"],
         r"not a folder", setup=_file(), output=None),
    Case("prepare", "parent is a file", ["prepare", "{I}/sim", "--out", "{W}/afile/out", "--size", "16"],
         r"a parent is a file", rc=1, setup=_file(), output="{W}/afile/out"),
    Case("prepare", "name too long", ["prepare", "{I}/sim", "--out", "{W}/" + LONG, "--size", "16"],
         r"name too long", rc=1, output=None),
    # ---- train
    Case("train", "missing data set", ["train", "{W}/none", "--out", "{W}/out", "--preset", "tiny"], r"not found"),
    Case("train", "manifest not JSON", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"], r"not valid JSON",
         setup=_copy("ds", "ds", lambda d: (d / "manifest.json").write_text("{oops"))),
    Case("train", "manifest is a list", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"],
         r"expected an object at the top level",
         setup=_copy("ds", "ds", lambda d: (d / "manifest.json").write_text("[1, 2]"))),
    Case("train", "manifest without sequences", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"],
         r"missing key sequences", setup=_copy("ds", "ds", _json_edit("manifest.json", _del(["sequences"])))),
    Case("train", "negative frame count", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"],
         r"key sequences\[0\]\.frames", setup=_copy("ds", "ds", _json_edit("manifest.json",
                                                                        lambda d: _set(["sequences"], [dict(d["sequences"][0], frames=-1)])(d)))),
    Case("train", "NaN in the manifest", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"], r"NaN",
         setup=_copy("ds", "ds", _json_edit("manifest.json", lambda d: json.dumps(d).replace('"clamp": 4.0', '"clamp": NaN')))),
    Case("train", "manifest not UTF-8", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"], r"not UTF-8",
         setup=_copy("ds", "ds", lambda d: (d / "manifest.json").write_bytes(b'{"format": "\xff\xfe"}'))),
    Case("train", "wrong clamp type", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"], r"key clamp",
         setup=_copy("ds", "ds", _json_edit("manifest.json", _set(["clamp"], "four")))),
    Case("train", "corrupt HDF5", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"], r"not a readable HDF5",
         setup=_copy("ds", "ds", lambda d: next(d.glob("*.h5")).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100))),
    Case("train", "HDF5 shape differs from manifest", ["train", "{W}/ds", "--out", "{W}/out", "--preset", "tiny"],
         r"the manifest says", setup=_copy("ds", "ds", _json_edit("manifest.json", lambda d: _set(
             ["sequences"], [dict(d["sequences"][0], frames=7)] + d["sequences"][1:])(d)))),
    Case("train", "negative decay factor", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/c.yaml"],
         r"train\.lr_gamma", setup=_yaml("train:\n  lr_gamma: -3\n")),
    Case("train", "zero learning rate", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/c.yaml"],
         r"train\.lr_net", setup=_yaml("train:\n  lr_net: 0\n")),
    Case("train", "unknown config key", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/c.yaml"],
         r"train\.learning_rate: unknown key", setup=_yaml("train:\n  learning_rate: 0.1\n")),
    Case("train", "config not YAML", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/c.yaml"],
         r"not valid YAML", setup=_yaml("train: [1, 2\n")),
    Case("train", "config is a list", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/c.yaml"],
         r"expected a mapping", setup=_yaml("- 1\n- 2\n")),
    Case("train", "config not UTF-8", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/c.yaml"],
         r"not UTF-8", setup=_yaml(b"train:\n  epochs: \xff\n")),
    Case("train", "config is a folder", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/cfg"], r"is a folder",
         setup=lambda w, i: (w / "cfg").mkdir()),
    Case("train", "infinite learning rate", ["train", "{I}/ds", "--out", "{W}/out", "--config", "{W}/c.yaml"],
         r"train\.lr_codes", setup=_yaml("train:\n  lr_codes: .inf\n")),
    Case("train", "out is the data set", ["train", "{I}/ds", "--out", "{I}/ds", "--preset", "tiny", "--overwrite"],
         r"is the input", output=None),
    Case("train", "out inside the data set", ["train", "{I}/ds", "--out", "{I}/ds/run", "--preset", "tiny"],
         r"lies inside the input", output="{I}/ds/run"),
    Case("train", "resume nothing", ["train", "{I}/ds", "--out", "{W}/out", "--resume"], r"no run folder to resume"),
    Case("train", "output exists", ["train", "{I}/ds", "--out", "{W}/out", "--preset", "tiny"], r"output exists",
         setup=_file("out/keep.txt"), output=None),
    # issue 11: rotations of a single sequence (relative to nothing), cells too small for the grid
    Case("train", "--rotations on one sequence", ["train", "{W}/one", "--out", "{W}/out", "--preset", "tiny",
                                                  "--rotations"],
         r"--rotations needs at least 2 sequences .*; \S*one has 1: train without --rotations",
         setup=_copy("ds", "one", _json_edit("manifest.json", lambda d: _set(["sequences"], d["sequences"][:1])(d)))),
    Case("train", "config rotations on one sequence", ["train", "{W}/one", "--out", "{W}/out", "--preset", "tiny",
                                                       "--config", "{W}/c.yaml"],
         r"train\.rotations needs at least 2 sequences .*one has 1: set train\.rotations to false or add sequences",
         setup=lambda w, i: (_copy("ds", "one", _json_edit("manifest.json", lambda d: _set(
             ["sequences"], d["sequences"][:1])(d)))(w, i), _yaml("train:\n  rotations: true\n")(w, i))),
    Case("train", "cells too small for the grid", ["train", "{W}/small", "--out", "{W}/out", "--preset", "tiny"],
         r"small: the cells are 2\.\d voxels across \(median over 3 frames; prepared with size 16, voxel size 0\.5 um\), "
         r"fewer than 4: .*--center frame`, a smaller `--voxel-size` or a larger `--size`",
         setup=lambda w, i: _ball_dataset(w / "small", radius=1.3)),
    # ---- generate
    Case("generate", "missing run", ["generate", "{W}/none", "--out", "{W}/out", "--n", "1"], r"no such run folder"),
    Case("generate", "run.json not JSON", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"], r"run\.json: not valid JSON",
         setup=_copy("run", "run", lambda d: (d / "run.json").write_text("{"))),
    Case("generate", "run.json without names", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"],
         r"missing key names", setup=_copy("run", "run", _json_edit("run.json", _del(["names"])))),
    Case("generate", "run.json names not a list", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"],
         r"key names: expected a list", setup=_copy("run", "run", _json_edit("run.json", _set(["names"], "abc")))),
    Case("generate", "run.json with Infinity", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"], r"Infinity",
         setup=_copy("run", "run", _json_edit("run.json", lambda d: json.dumps(dict(d, final_loss=float("inf")))))),
    Case("generate", "NaN codes", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"], r"NaN or infinite",
         setup=_copy("run", "run", _tensors("latents.safetensors", _nan_latents))),
    Case("generate", "rotations not rotations", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"],
         r"not a rotation matrix", setup=_copy("run", "run", _tensors("latents.safetensors", _bad_rotations))),
    Case("generate", "corrupt weights", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"], r"unreadable weights",
         setup=_copy("run", "run", lambda d: (d / "model.safetensors").write_bytes(b"\0" * 20))),
    Case("generate", "run config with negative rate", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"],
         r"lr_gamma", setup=_copy("run", "run", lambda d: (d / "config.yaml").write_text(
             (d / "config.yaml").read_text().replace("lr_gamma: 0.5", "lr_gamma: -3")))),
    Case("generate", "run manifest clamp not a number", ["generate", "{W}/run", "--out", "{W}/out", "--n", "1"],
         r"key clamp", setup=_copy("run", "run", _json_edit("manifest.json", _set(["clamp"], "x")))),
    Case("generate", "infinite sigma", ["generate", "{I}/run", "--out", "{W}/out", "--n", "1", "--sigma", "inf"], r"--sigma"),
    Case("generate", "NaN sigma", ["generate", "{I}/run", "--out", "{W}/out", "--n", "1", "--sigma", "nan"], r"--sigma"),
    Case("generate", "negative sigma", ["generate", "{I}/run", "--out", "{W}/out", "--n", "1", "--sigma=-1"], r"--sigma"),
    Case("generate", "zero sequences", ["generate", "{I}/run", "--out", "{W}/out", "--n", "0"], r"--n"),
    Case("generate", "size beyond memory", ["generate", "{I}/run", "--out", "{W}/out", "--n", "1", "--size", "30000"],
         r"needs about"),
    Case("generate", "unknown format", ["generate", "{I}/run", "--out", "{W}/out", "--n", "1", "--formats", "tiff,png"],
         r"unknown format png"),
    Case("generate", "out is the run", ["generate", "{I}/run", "--out", "{I}/run", "--n", "1", "--overwrite"],
         r"is the input", output=None),
    Case("generate", "out inside the run", ["generate", "{I}/run", "--out", "{I}/run/gen", "--n", "1"],
         r"lies inside the input", output="{I}/run/gen"),
    Case("generate", "out is a file", ["generate", "{I}/run", "--out", "{W}/afile", "--n", "1"], r"not a folder",
         setup=_file(), output=None),
    Case("generate", "parent is a file", ["generate", "{I}/run", "--out", "{W}/afile/out", "--n", "1"],
         r"a parent is a file", rc=1, setup=_file(), output="{W}/afile/out"),
    Case("generate", "run and model both", ["generate", "{I}/run", "--model", "deforming", "--out", "{W}/out", "--n", "1"],
         r"exactly one"),
    # ---- reconstruct / interpolate / fit
    Case("reconstruct", "missing run", ["reconstruct", "{W}/none", "--out", "{W}/out"], r"no such run folder"),
    Case("reconstruct", "unknown sequence", ["reconstruct", "{I}/run", "--out", "{W}/out", "--sequences", "nope"],
         r"not a sequence name"),
    Case("reconstruct", "zero dims", ["reconstruct", "{I}/run", "--out", "{W}/out", "--dims", "0", "4", "4"], r"--dims"),
    Case("reconstruct", "out is the run", ["reconstruct", "{I}/run", "--out", "{I}/run", "--overwrite"], r"is the input",
         output=None),
    Case("interpolate", "one step", ["interpolate", "{I}/run", "--from", "0", "--to", "1", "--steps", "1", "--out", "{W}/out"],
         r"--steps"),
    Case("interpolate", "unknown code", ["interpolate", "{I}/run", "--from", "x", "--to", "1", "--steps", "2",
                                         "--out", "{W}/out"], r"not a sequence name"),
    Case("interpolate", "out inside the run", ["interpolate", "{I}/run", "--from", "0", "--to", "1", "--steps", "2",
                                               "--out", "{I}/run/steps"], r"lies inside", output="{I}/run/steps"),
    Case("fit", "missing run", ["fit", "{W}/none", "{I}/ds", "--out", "{W}/out", "--steps", "1"], r"no such run folder"),
    Case("fit", "bad data set", ["fit", "{I}/run", "{W}/ds", "--out", "{W}/out", "--steps", "1"], r"missing key sequences",
         setup=_copy("ds", "ds", _json_edit("manifest.json", _del(["sequences"])))),
    Case("fit", "out is the data set", ["fit", "{I}/run", "{I}/ds", "--out", "{I}/ds", "--steps", "1", "--overwrite"],
         r"is the input", output=None),
    Case("fit", "out inside the run", ["fit", "{I}/run", "{I}/ds", "--out", "{I}/run/fit", "--steps", "1"],
         r"lies inside", output="{I}/run/fit"),
    # issue 11: a data set at another scale than the run (the run: size 16, clamp 4, the automatic voxel size V)
    Case("fit", "data set with another voxel size", ["fit", "{I}/run", "{W}/ds", "--out", "{W}/out", "--steps", "1"],
         r"ds: prepared with voxel size 5 um and clamp 4 \(20 um\), the run with voxel size (\d\.\d+) um and clamp 4 "
         r"\([\d.]+ um\): its cells would be fitted at the wrong scale; prepare it again with "
         r"`cellinr prepare \.\.\. --size 16 --voxel-size [\d.]+ --clamp 4`$",
         setup=lambda w, i: _prepare_like(w / "ds", i, voxel_size=5.0)),
    Case("fit", "data set with another clamp", ["fit", "{I}/run", "{W}/ds", "--out", "{W}/out", "--steps", "1"],
         r"ds: prepared with voxel size (\d\.\d+) um and clamp 8 \([\d.]+ um\), the run with voxel size \1 um and "
         r"clamp 4 \([\d.]+ um\): its SDF saturates at another distance .*--size 16 --voxel-size [\d.]+ --clamp 4`$", setup=lambda w, i: _prepare_like(w / "ds", i, clamp=8.0)),
    Case("fit", "data set on another grid", ["fit", "{I}/run", "{W}/ds", "--out", "{W}/out", "--steps", "1"],
         r"prepared with size 20, voxel size (\d\.\d+) um .* the run with size 16, voxel size \1 um .*"
         r"--size 16 --voxel-size [\d.]+ --clamp 4`$", setup=lambda w, i: _prepare_like(w / "ds", i, size=20,
                                                                                    voxel_size=_run_voxel(i))),
    # ---- texture
    Case("texture", "render out is the masks", ["texture", "render", "--masks", "{I}/masks2d", "--out", "{I}/masks2d",
                                                "--overwrite"], r"is the input", output=None),
    Case("texture", "render out inside the masks", ["texture", "render", "--masks", "{I}/masks2d", "--out",
                                                    "{I}/masks2d/img"], r"lies inside", output="{I}/masks2d/img"),
    Case("texture", "render a 3D volume", ["texture", "render", "--masks", "{W}/vol.tif", "--out", "{W}/out"],
         r"3D volume", setup=_write_tif("vol.tif", VOL3D, "ZYX")),
    Case("texture", "render NaN masks", ["texture", "render", "--masks", "{W}/nan.tif", "--out", "{W}/out"], r"integer labels",
         setup=_write_tif("nan.tif", NAN2D, "YX")),
    Case("texture", "render missing masks", ["texture", "render", "--masks", "{W}/none", "--out", "{W}/out"], r"not found"),
    Case("texture", "render like shapes differ", ["texture", "render", "--masks", "{I}/masks2d", "--out", "{W}/out",
                                                  "--like", "{I}/img.tif", "{W}/m.tif"], r"shapes differ",
         setup=_write_tif("m.tif", np.zeros((8, 8), np.uint8), "YX")),
    Case("texture", "apply missing model", ["texture", "apply", "{W}/none", "--masks", "{I}/masks2d", "--out", "{W}/out"],
         r"none"),
    Case("texture", "apply model JSON broken", ["texture", "apply", "{W}/tm", "--masks", "{I}/masks2d", "--out", "{W}/out"],
         r"texture_model\.json: not valid JSON", setup=lambda w, i: (w / "tm").mkdir() or (w / "tm" / "texture_model.json").write_text("{")),
    Case("texture", "apply model lo not a number", ["texture", "apply", "{W}/tm", "--masks", "{I}/masks2d", "--out",
                                                    "{W}/out"], r"key normalisation\.lo",
         setup=lambda w, i: (w / "tm").mkdir() or (w / "tm" / "texture_model.json").write_text(json.dumps(
             {"kind": "cellinr-texture-model", "net": {}, "normalisation": {"lo": "a", "hi": 1}}))),
    Case("texture", "apply out is the masks", ["texture", "apply", "dsb2018", "--masks", "{I}/masks2d", "--out",
                                               "{I}/masks2d", "--overwrite"], r"is the input", output=None),
    Case("texture", "train missing images", ["texture", "train", "--images", "{W}/none", "--masks", "{I}/mask.tif",
                                             "--out", "{W}/out", "--size", "16"], r"not found"),
    Case("texture", "train out is the images", ["texture", "train", "--images", "{I}/img.tif", "--masks", "{I}/mask.tif",
                                                "--out", "{I}/img.tif", "--size", "16", "--overwrite"], r"is the input",
         output=None),
    Case("texture", "train crops beyond memory", ["texture", "train", "--images", "{I}/img.tif", "--masks",
                                                  "{I}/mask.tif", "--out", "{W}/out", "--size", "200000"], r"needs about"),
    Case("texture", "train 3D masks", ["texture", "train", "--images", "{W}/vol.tif", "--masks", "{W}/vol.tif",
                                       "--out", "{W}/out", "--size", "16"], r"3D volume",
         setup=_write_tif("vol.tif", VOL3D, "ZYX")),
    Case("texture", "train resume nothing", ["texture", "train", "--images", "{I}/img.tif", "--masks", "{I}/mask.tif",
                                             "--out", "{W}/out", "--size", "16", "--resume"], r"nothing to resume"),
    # ---- benchmark
    Case("benchmark", "missing source", ["benchmark", "{W}/none", "--out", "{W}/out"], r"not found"),
    Case("benchmark", "out is the source", ["benchmark", "{I}/sim", "--out", "{I}/sim", "--overwrite"], r"is the input",
         output=None),
    Case("benchmark", "out inside the source", ["benchmark", "{I}/sim", "--out", "{I}/sim/bench"], r"lies inside",
         output="{I}/sim/bench"),
    Case("benchmark", "like file missing", ["benchmark", "{I}/sim", "--out", "{W}/out", "--like", "{W}/a.tif",
                                            "{W}/b.tif"], r"a\.tif"),
    Case("benchmark", "broken texture model", ["benchmark", "{I}/sim", "--out", "{W}/out", "--texture", "{W}/tm"],
         r"texture_model\.json", setup=lambda w, i: (w / "tm").mkdir() or (w / "tm" / "texture_model.json").write_text("[]")),
    Case("benchmark", "only corrupt TIFFs", ["benchmark", "{W}/src", "--out", "{W}/out"], r"bad\.tif",
         setup=_bytes("src/bad.tif", b"MM\x00*" + b"\x00" * 40)),
    # ---- measure
    Case("measure", "out is the input file", ["measure", "{I}/sim/deforming_000.tif", "--out",
                                              "{I}/sim/deforming_000.tif", "--overwrite"], r"is the input", output=None),
    Case("measure", "out inside the input folder", ["measure", "{I}/sim", "--out", "{I}/sim/deforming_000.tif",
                                                    "--overwrite"], r"lies inside", output=None),
    Case("measure", "new CSV inside the input folder", ["measure", "{I}/sim", "--out", "{I}/sim/table.csv"],
         r"lies inside", output="{I}/sim/table.csv"),
    Case("measure", "out is a folder", ["measure", "{I}/sim", "--out", "{W}/dir"], r"is a folder",
         setup=lambda w, i: (w / "dir").mkdir(), output=None),
    Case("measure", "missing input", ["measure", "{W}/none.tif", "--out", "{W}/out"], r"none\.tif"),
    Case("measure", "frame numbers with gaps", ["measure", "{W}/gap", "--out", "{W}/out"], r"gaps", setup=_ctc_gap),
    Case("measure", "NaN masks", ["measure", "{W}/nan.tif", "--out", "{W}/out"], r"NaN",
         setup=_write_tif("nan.tif", np.full((4, 8, 8), np.nan, np.float32), "ZYX")),
    Case("measure", "parent is a file", ["measure", "{I}/sim", "--out", "{W}/afile/t.csv"], r"a parent is a file", rc=1,
         setup=_file(), output="{W}/afile/t.csv"),
    # ---- compare
    Case("compare", "out is the reference", ["compare", "{I}/sim", "{I}/table.csv", "--out", "{I}/sim", "--overwrite"],
         r"is the input", output=None),
    Case("compare", "out is the synthetic set", ["compare", "{I}/table.csv", "{I}/sim", "--out", "{I}/sim",
                                                 "--overwrite"], r"is the input", output=None),
    Case("compare", "out inside the reference", ["compare", "{I}/sim", "{I}/table.csv", "--out", "{I}/sim/report"],
         r"lies inside", output="{I}/sim/report"),
    Case("compare", "CSV not UTF-8", ["compare", "{W}/t.csv", "{I}/table.csv", "--out", "{W}/out"], r"not UTF-8",
         setup=_bytes("t.csv", b"sequence,frame\n\xff,1\n")),
    Case("compare", "CSV ragged row", ["compare", "{W}/t.csv", "{I}/table.csv", "--out", "{W}/out"], r"line 3",
         setup=_bytes("t.csv", b"sequence,frame,volume_um3\na,0,1\nb,1\n")),
    Case("compare", "CSV infinite value", ["compare", "{W}/t.csv", "{I}/table.csv", "--out", "{W}/out"], r"infinite",
         setup=_bytes("t.csv", b"sequence,frame,volume_um3\na,0,inf\n")),
    Case("compare", "CSV without sequence column", ["compare", "{W}/t.csv", "{I}/table.csv", "--out", "{W}/out"],
         r"missing column sequence", setup=_bytes("t.csv", b"name,frame\na,0\n")),
    Case("compare", "missing reference", ["compare", "{W}/none", "{I}/table.csv", "--out", "{W}/out"], r"no such file"),
    # ---- simulate
    Case("simulate", "size beyond memory", ["simulate", "--kind", "deforming", "--size", "20000", "--out", "{W}/out"],
         r"needs about"),
    Case("simulate", "size too small", ["simulate", "--kind", "deforming", "--size", "4", "--out", "{W}/out"], r"size"),
    Case("simulate", "out is a file", ["simulate", "--kind", "deforming", "--size", "16", "--out", "{W}/afile"],
         r"not a folder", setup=_file(), output=None),
    Case("simulate", "output exists", ["simulate", "--kind", "deforming", "--size", "16", "--out", "{W}/out"], r"exists",
         setup=_file("out/keep.txt"), output=None),
    Case("simulate", "parent is a file", ["simulate", "--kind", "deforming", "--size", "16", "--sequences", "1",
                                          "--frames", "1", "--out", "{W}/afile/out"], r"a parent is a file", rc=1,
         setup=_file(), output="{W}/afile/out"),
    # ---- import-reference
    Case("import-reference", "missing folder", ["import-reference", "{W}/none", "--out", "{W}/out"],
         r"experiment folder not found"),
    Case("import-reference", "specs not JSON", ["import-reference", "{W}/exp", "--out", "{W}/out"], r"not valid JSON",
         setup=_copy("exp", "exp", lambda d: (d / "specs.json").write_text("{,}"))),
    Case("import-reference", "specs without CodeLength", ["import-reference", "{W}/exp", "--out", "{W}/out"],
         r"missing key CodeLength", setup=_copy("exp", "exp", _json_edit("specs.json", _del(["CodeLength"])))),
    Case("import-reference", "negative CodeLength", ["import-reference", "{W}/exp", "--out", "{W}/out"],
         r"key CodeLength", setup=_copy("exp", "exp", _json_edit("specs.json", _set(["CodeLength"], -8)))),
    Case("import-reference", "dims not a list", ["import-reference", "{W}/exp", "--out", "{W}/out"],
         r"key NetworkSpecs\.dims", setup=_copy("exp", "exp", _json_edit("specs.json", _set(["NetworkSpecs", "dims"], 32)))),
    Case("import-reference", "corrupt .mat", ["import-reference", "{W}/exp", "--out", "{W}/out"], r"lat_vecs\.mat",
         setup=_copy("exp", "exp", lambda d: (d / "LatentCodes" / "lat_vecs.mat").write_bytes(b"MATLAB 5.0" + b"\0" * 50))),
    Case("import-reference", "NaN codes in .mat", ["import-reference", "{W}/exp", "--out", "{W}/out"], r"NaN",
         setup=_copy("exp", "exp", lambda d: __import__("scipy.io").io.savemat(
             d / "LatentCodes" / "lat_vecs.mat", {"lat_vecs": np.full((2, 8), np.nan)}))),
    Case("import-reference", "out is the experiment", ["import-reference", "{I}/exp", "--out", "{I}/exp", "--overwrite"],
         r"is the input", output=None),
    # ---- rotation-report
    Case("rotation-report", "groups file missing", ["rotation-report", "{I}/run", "--groups", "{W}/none.json", "--out",
                                                    "{W}/out"], r"not found"),
    Case("rotation-report", "groups not JSON", ["rotation-report", "{I}/run", "--groups", "{W}/g.json", "--out", "{W}/out"],
         r"not valid JSON", setup=_groups(b"{groups")),
    Case("rotation-report", "groups rotation not 3x3", ["rotation-report", "{I}/run", "--groups", "{W}/g.json", "--out",
                                                        "{W}/out"], r"key rotations\.a",
         setup=_groups({"rotations": {"a": [[1, 0], [0, 1]]}})),
    Case("rotation-report", "groups unknown convention", ["rotation-report", "{I}/run", "--groups", "{W}/g.json",
                                                          "--out", "{W}/out"], r"key convention",
         setup=_groups({"convention": "sideways"})),
    Case("rotation-report", "out is the run", ["rotation-report", "{I}/run", "--out", "{I}/run", "--overwrite"],
         r"is the input", output=None),
    # ---- scene
    Case("scene", "unknown model", ["scene", "--model", "nope", "--cells", "2", "--dims", "1", "32", "32",
                                    "--frames", "2", "--out", "{W}/out"], r"no bundled model"),
    Case("scene", "too many cells", ["scene", "--model", "dividing", "--cells", "400", "--dims", "1", "32", "32",
                                     "--frames", "2", "--out", "{W}/out"], r"largest density that fits"),
    Case("scene", "unknown texture model", ["scene", "--model", "dividing", "--cells", "2", "--dims", "1", "32", "32",
                                            "--frames", "2", "--texture", "nope", "--out", "{W}/out"],
         r"no such texture model"),
    Case("scene", "missing real data set", ["scene", "--model", "dividing", "--cells", "2", "--dims", "1", "32", "32",
                                            "--frames", "2", "--like", "{W}/nothere", "--out", "{W}/out"],
         r"no such folder"),
    # ---- overlap
    Case("overlap", "missing input", ["overlap", "{W}/none.tif", "{I}/sim/deforming_000.tif"], r"no such file",
         output=None),
    Case("overlap", "masks of different sizes", ["overlap", "{I}/sim/deforming_000.tif", "{I}/masks2d/a.tif"],
         r"different sizes|2D|3D", output=None),
    Case("overlap", "folders without common names", ["overlap", "{I}/sim", "{I}/masks2d"], r"same name", output=None),
    Case("overlap", "table onto the input", ["overlap", "{I}/sim/deforming_000.tif", "{I}/sim/deforming_001.tif",
                                             "--out", "{I}/sim/deforming_000.tif", "--overwrite"], r"is the input",
         output=None),
    # ---- demo, view, info, compare-activations
    Case("demo", "out is a file", ["demo", "--out", "{W}/afile"], r"not a folder", setup=_file(), output=None),
    Case("demo", "unknown kind", ["demo", "--out", "{W}/out", "--kinds", "nope"], r"nope"),
    Case("view", "montage onto the input", ["view", "{I}/sim/deforming_000.tif", "--no-napari", "--out",
                                            "{I}/sim/deforming_000.tif"], r"is the input", output=None),
    Case("view", "missing input", ["view", "{W}/none.tif", "--no-napari"], r"not found", output=None),
    Case("info", "broken manifest", ["info", "{W}/ds"], r"manifest\.json", output=None,
         setup=_copy("ds", "ds", lambda d: (d / "manifest.json").write_text('{"format": "cellinr-sdf-dataset"}'))),
    Case("info", "broken run.json", ["info", "{W}/run"], r"run\.json", output=None,
         setup=_copy("run", "run", lambda d: (d / "run.json").write_text("[]"))),
    Case("info", "benchmark.json sequences not objects", ["info", "{W}/b"], r"key sequences\[0\]", output=None,
         setup=_bytes("b/benchmark.json", b'{"kind": "cellinr-benchmark", "sequences": [1]}')),
    Case("info", "texture_model.json net not an object", ["info", "{W}/t"], r"key net", output=None,
         setup=_bytes("t/texture_model.json", b'{"kind": "cellinr-texture-model", "net": [1]}')),
    Case("generate", "folder of a job with other options", ["generate", "{I}/run", "--out", "{W}/g", "--n", "1"],
         r"other options", output=None,
         setup=_bytes("g/cellinr-generate.json", b'{"format": "cellinr-generate-job", "options": {"seed": 9}}')),
    Case("train", "interrupted run waiting for --resume", ["train", "{I}/ds", "--out", "{W}/r", "--preset", "tiny"],
         r"pass --resume", output="{W}/r",
         setup=_bytes(".r.incomplete/checkpoints/epoch_0000001.pt", b"x")),
    Case("texture", "train output exists", ["texture", "train", "--images", "{I}/img.tif", "--masks", "{I}/mask.tif",
                                            "--out", "{W}/out", "--size", "16"], r"pass --overwrite",
         setup=_file("out/keep.txt"), output=None),
    Case("benchmark", "like mask is a 3D volume", ["benchmark", "{I}/sim", "--out", "{W}/out", "--like", "{I}/img.tif",
                                                   "{W}/vol.tif"], r"3D volume", setup=_write_tif("vol.tif", VOL3D, "ZYX")),
    Case("compare-activations", "out is the data set", ["compare-activations", "{I}/ds", "--out", "{I}/ds", "--overwrite"],
         r"is the input", output=None),
    Case("compare-activations", "missing data set", ["compare-activations", "{W}/none", "--out", "{W}/out"], r"not found"),
]


def _expand(token: str, inputs: Path, work: Path) -> str:
    return token.replace("{I}", str(inputs)).replace("{W}", str(work))


def run_cli(argv, capsys) -> tuple[int, str]:
    """Run ``cellinr argv`` in-process; returns (exit status, stderr). Any exception is a failure."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []  # main's basicConfig then logs to this test's captured stderr
    try:
        rc = main([str(a) for a in argv])
    finally:
        root.handlers = saved
    return rc, capsys.readouterr().err


def check_failure(rc: int, err: str, command: str, *, match: str, expect_rc: int) -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(f"cellinr {command}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one error line, got:\n{err}"
    others = [ln for ln in lines[:-1] if not re.match(r"^(WARNING|INFO|DEBUG): ", ln)]
    assert not others, f"unexpected output before the error:\n{err}"
    assert re.search(match, errors[0]), f"{errors[0]!r} does not match {match!r}"
    assert rc == expect_rc, f"exit status {rc}, expected {expect_rc}: {errors[0]}"


def leftovers(folder: Path) -> list[str]:
    """Temporary or staging entries left in ``folder`` (and the folders beside it)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".incomplete"))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}: {c.name}" for c in CASES])
def test_bad_input(case: Case, inputs: Path, tmp_path: Path, capsys):
    work = tmp_path
    if case.setup is not None:
        case.setup(work, inputs)
    before_inputs, before_work = _tree_hash(inputs), _tree_hash(work)
    before_names = {p.name for p in work.iterdir()}
    out = Path(_expand(case.output, inputs, work)) if case.output else None
    rc, err = run_cli([_expand(t, inputs, work) for t in case.argv], capsys)
    check_failure(rc, err, case.command, match=case.match, expect_rc=case.rc)
    assert _tree_hash(inputs) == before_inputs, "an input changed"
    after_work = _tree_hash(work)
    assert after_work == before_work, f"files changed in the case folder: {set(after_work) ^ set(before_work)}"
    if out is not None:
        assert not out.exists(), f"{out} was created"
    for folder in (work, inputs, inputs / "sim", inputs / "run", inputs / "ds"):
        left = [n for n in leftovers(folder) if folder != work or n not in before_names]
        assert not left, f"left in {folder}: {left}"


def test_table_covers_every_command():
    from cellinr.cli import COMMAND_MODULES

    commands = {c.command for c in CASES}
    expected = {m.replace("_", "-") for m in COMMAND_MODULES}
    assert expected <= commands, f"no bad-input case for {sorted(expected - commands)}"
    assert len(CASES) >= 80


def count_cases() -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in CASES:
        counts[c.command] = counts.get(c.command, 0) + 1
    return counts


# ----------------------------------------------------------------------------------------------
# the named failures of issue 15, and what must still work


def test_corrected_train_retry_is_not_refused(inputs: Path, tmp_path: Path, capsys):
    """A config error leaves no folder, so the corrected command runs."""
    (tmp_path / "c.yaml").write_text("train:\n  lr_gamma: -3\n")
    rc, err = run_cli(["train", inputs / "ds", "--out", tmp_path / "run", "--config", tmp_path / "c.yaml",
                       "--device", "cpu"], capsys)
    check_failure(rc, err, "train", match="lr_gamma", expect_rc=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
    (tmp_path / "c.yaml").write_text("train:\n  lr_gamma: 0.5\n  epochs: 1\n")
    rc, err = run_cli(["train", inputs / "ds", "--out", tmp_path / "run", "--config", tmp_path / "c.yaml",
                       "--preset", "tiny", "--device", "cpu"], capsys)
    assert rc == 0, err
    assert (tmp_path / "run" / "run.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "run"]


def test_allow_gaps_honours_frame_numbers(inputs: Path, tmp_path: Path, capsys):
    """With --allow-gaps a missing CTC frame is an empty frame: the cell keeps frames 0, 1 and 3."""
    _ctc_gap(tmp_path, inputs)
    rc, err = run_cli(["prepare", tmp_path / "gap", "--out", tmp_path / "ds", "--size", "16", "--allow-gaps"], capsys)
    assert rc == 0, err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    (seq,) = manifest["sequences"]
    assert seq["source_frames"] == [0, 1, 3]
    assert seq["source_time_indices"] == [0, 1, 3]


# ----------------------------------------------------------------------------------------------
# issue 11: what the scale, rotation and cell-size checks still accept


def test_fit_follows_its_own_fix_and_tolerates_rounding(inputs: Path, tmp_path: Path, capsys):
    """The prepare options the refusal names give a data set fit accepts; a voxel size rounded to 1e-4
    passes; a data set without a voxel size is fitted with a warning."""
    _prepare_like(tmp_path / "coarse", inputs, voxel_size=5.0)
    rc, err = run_cli(["fit", inputs / "run", tmp_path / "coarse", "--out", tmp_path / "f0", "--steps", "1"], capsys)
    check_failure(rc, err, "fit", match="prepare it again", expect_rc=2)
    fix = re.search(r"`cellinr prepare \.\.\. (.*)`", err).group(1).split()
    rc, err = run_cli(["prepare", inputs / "sim", "--out", tmp_path / "fixed", "--no-preview", *fix], capsys)
    assert rc == 0, err
    rc, err = run_cli(["fit", inputs / "run", tmp_path / "fixed", "--out", tmp_path / "f1", "--steps", "1"], capsys)
    assert rc == 0 and "WARNING" not in err, err
    assert (tmp_path / "f1" / "fit.json").is_file()

    shutil.copytree(inputs / "ds", tmp_path / "rounded")
    _json_edit("manifest.json", lambda d: _set(["voxel_size_um"], d["voxel_size_um"] * (1 + 2e-4))(d))(tmp_path / "rounded")
    rc, err = run_cli(["fit", inputs / "run", tmp_path / "rounded", "--out", tmp_path / "f2", "--steps", "1"], capsys)
    assert rc == 0 and "WARNING" not in err, err
    shutil.copytree(inputs / "ds", tmp_path / "unknown")
    _json_edit("manifest.json", _del(["voxel_size_um"]))(tmp_path / "unknown")
    rc, err = run_cli(["fit", inputs / "run", tmp_path / "unknown", "--out", tmp_path / "f3", "--steps", "1"], capsys)
    assert rc == 0, err
    assert re.search(r"WARNING: \S*unknown: the data set records no voxel size", err), err
    # the run's own cells generated on a non-cubic grid: voxel sizes and clamp scaled with it, same microns
    rc, err = run_cli(["reconstruct", inputs / "run", "--out", tmp_path / "grid", "--dims", "12", "16", "20",
                       "--frames", "2", "--formats", "sdf", "--device", "cpu"], capsys)
    assert rc == 0, err
    manifest = json.loads((tmp_path / "grid" / "manifest.json").read_text())
    assert manifest["dims"] == [12, 16, 20] and len(set(manifest["voxel_size_um"])) == 3
    rc, err = run_cli(["fit", inputs / "run", tmp_path / "grid", "--out", tmp_path / "f4", "--steps", "1"], capsys)
    assert rc == 0 and "WARNING" not in err, err


def test_one_sequence_rotations_from_a_preset_are_turned_off(inputs: Path, tmp_path: Path, caplog):
    """The reference preset's rotations on a one-sequence data set: a warning, no rotations; an explicit
    request (argument, mapping, YAML file, Config changed from its preset) is refused."""
    from cellinr.errors import ParameterError
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.model.config import preset
    from cellinr.training.shape import _checked_config

    one = _ball_dataset(tmp_path / "one", radius=5.0)
    ds = SDFDataset(one)
    with caplog.at_level(logging.WARNING):
        cfg = _checked_config(ds, "reference", None, None, None, None)
    assert cfg.train.rotations is False and cfg.preset == "reference"
    assert "has 1 sequence: learned rotations (the reference preset's default) need at least 2" in caplog.text
    assert _checked_config(ds, "reference", preset("reference"), None, None, None).train.rotations is False
    assert _checked_config(ds, "reference", None, None, None, False).train.rotations is False
    (tmp_path / "c.yaml").write_text("train:\n  rotations: true\n")
    tiny_on = preset("tiny")
    tiny_on.train.rotations = True
    for config, rotations, flag in ((None, True, "--rotations"), ({"train": {"rotations": True}}, None, "train.rotations"),
                                    (tmp_path / "c.yaml", None, "train.rotations"), (tiny_on, None, "train.rotations")):
        with pytest.raises(ParameterError, match=rf"^{re.escape(flag)} needs at least 2 sequences .*one has 1"):
            _checked_config(ds, "tiny", config, None, None, rotations)
    # two sequences: the preset's rotations stay on
    assert _checked_config(SDFDataset(inputs / "ds"), "reference", None, None, None, None).train.rotations is True


def test_cell_size_measured_and_warned(tmp_path: Path, caplog):
    """The equal-volume diameter of a ball is its diameter; 4 to 10 voxels across warns, more is silent."""
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.training.dataset_checks import cell_diameter_voxels, check_cell_size

    big = SDFDataset(_ball_dataset(tmp_path / "big", radius=6.0, size=24))
    diameter, n = cell_diameter_voxels(big)
    assert n == 3 and diameter == pytest.approx(2 * 6.0 * 1.05, rel=0.05)  # the middle frame's ball
    with caplog.at_level(logging.WARNING):
        check_cell_size(big)
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        assert 5.5 < check_cell_size(SDFDataset(_ball_dataset(tmp_path / "mid", radius=3.0))) < 7.5
    assert re.search(r"mid: the cells are only \d\.\d voxels across \(median over 3 frames; prepared with size 16, "
                     r"voxel size 0\.5 um\)", caplog.text), caplog.text


def test_written_files_share_one_mode(inputs: Path):
    """Weights (safetensors), JSON, YAML, CSV and PNG files of a run get the same permissions."""
    modes = {p.name: p.stat().st_mode & 0o777 for p in (inputs / "run").rglob("*") if p.is_file()}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] == modes["run.json"]


def test_no_overlap_symlink(inputs: Path, tmp_path: Path, capsys):
    """An output reached through a symbolic link to an input is refused too."""
    link = tmp_path / "link"
    link.symlink_to(inputs / "sim", target_is_directory=True)
    before = _tree_hash(inputs)
    rc, err = run_cli(["compare", inputs / "sim", inputs / "table.csv", "--out", link, "--overwrite"], capsys)
    check_failure(rc, err, "compare", match="is the input", expect_rc=2)
    assert _tree_hash(inputs) == before


# ----------------------------------------------------------------------------------------------
# operating-system failures that need a special file system


@pytest.fixture
def readonly_dir(tmp_path):
    """A read-only tmpfs (root only)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount not permitted")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@ROOT_ONLY
@pytest.mark.parametrize("argv", [
    ["simulate", "--kind", "deforming", "--size", "16", "--sequences", "1", "--frames", "1", "--out", "{R}/out"],
    ["measure", "{I}/sim", "--out", "{R}/t.csv"],
    ["generate", "{I}/run", "--out", "{R}/gen", "--n", "1"],
    ["train", "{I}/ds", "--out", "{R}/run", "--preset", "tiny"],
], ids=["simulate", "measure", "generate", "train"])
def test_read_only_file_system(argv, inputs, readonly_dir, capsys):
    before = _tree_hash(inputs)
    argv = [t.replace("{I}", str(inputs)).replace("{R}", str(readonly_dir)) for t in argv]
    rc, err = run_cli(argv, capsys)
    check_failure(rc, err, argv[0], match="read-only file system", expect_rc=1)
    assert list(readonly_dir.iterdir()) == []
    assert _tree_hash(inputs) == before


def test_permission_denied(inputs, tmp_path):
    """A folder the user may not write to: one line, exit 1 (run as an unprivileged user when root)."""
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="cellinr-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copy2(inputs / "sim" / "deforming_000.tif", base / "m.tif")
        (base / "m.tif").chmod(0o644)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), HOME=str(base))
        cmd = [sys.executable, "-m", "cellinr", "measure", str(base / "m.tif"), "--out", str(locked / "t.csv")]
        kwargs = {}
        if os.geteuid() == 0:
            import pwd

            try:
                nobody = pwd.getpwnam("nobody")
            except KeyError:
                pytest.skip("no unprivileged user")
            kwargs = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=base, **kwargs)
        except PermissionError:
            pytest.skip("the unprivileged user cannot run this Python")
        if "ModuleNotFoundError" in proc.stderr or "cellinr measure:" not in proc.stderr:
            pytest.skip(f"the unprivileged user cannot run this Python: {proc.stderr[-200:]}")
        check_failure(proc.returncode, proc.stderr, "measure", match="permission denied", expect_rc=1)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_prepare_takes_a_runs_isotropic_voxel_triple_and_refuses_an_anisotropic_one(tmp_path):
    from cellinr.data.preparation import prepare
    from cellinr.errors import ParameterError
    from cellinr.io.units import isotropic_voxel

    assert isotropic_voxel((0.5, 0.5, 0.5)) == 0.5 and isotropic_voxel(np.array([2.0, 2.0, 2.0])) == 2.0
    assert isotropic_voxel(0.7) == 0.7 and isotropic_voxel(None) is None
    with pytest.raises(ParameterError, match="voxel_size: data sets are prepared on isotropic voxels"):
        prepare(tmp_path / "missing.tif", tmp_path / "out", voxel_size=(1.0, 0.5, 0.5))
    assert not (tmp_path / "out").exists()
