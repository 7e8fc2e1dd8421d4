"""Property-based fuzzing of the readers: every input either loads or raises a :class:`CellinrError`.

Readers under test: :func:`cellinr.io.sources.open_source` (TIFF with mutated headers and tags,
HDF5 files of any shape and dtype), :class:`cellinr.io.sdf_dataset.SDFDataset` (manifest.json),
:func:`cellinr.model.run.load_run` (run.json, manifest.json, config.yaml),
:func:`cellinr.model.config.from_yaml` (configs), :func:`cellinr.texture.apply.load_texture_model`
(texture_model.json), :func:`cellinr.evaluation.rotations.read_groups_file` (groups files),
:func:`cellinr.model.reference.import_reference` (specs.json) and
:func:`cellinr.measurement.tables.read_rows` (descriptor CSVs). Any other exception fails the test
(hypothesis then shrinks the input to a minimal example).

The default budget is small (a few seconds per reader); ``CELLINR_FUZZ_EXAMPLES=500`` or the slow
variants (``pytest -m slow tests/test_fuzz_readers.py``) search longer.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cellinr.errors import CellinrError  # noqa: E402

EXAMPLES = int(os.environ.get("CELLINR_FUZZ_EXAMPLES", "12"))
SLOW_EXAMPLES = 300
_COMMON = dict(deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])
FAST = settings(max_examples=EXAMPLES, **_COMMON)
SLOW = settings(max_examples=SLOW_EXAMPLES, **_COMMON)


def loads_or_refuses(fn, *args, **kwargs):
    """Call ``fn``; a CellinrError is a refusal (fine), any other exception fails the property."""
    try:
        return fn(*args, **kwargs)
    except CellinrError as exc:
        assert "\n" not in str(exc).strip(), f"multi-line error: {exc}"
        return None


def _both(prop, *strategies):
    """A fast (default suite) and a slow test of the same property."""
    fast = FAST(given(*strategies)(prop))
    slow = pytest.mark.slow(SLOW(given(*strategies)(prop)))
    return fast, slow


# ----------------------------------------------------------------------------------------------
# TIFF: valid files with mutated headers and tags

_DTYPES = ["uint8", "uint16", "int16", "int32", "float32", "float64", "bool"]


@st.composite
def tiff_bytes(draw):
    import tifffile

    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    data = (rng.random(shape) * 4).astype(dtype)
    if dtype.startswith("float") and draw(st.booleans()):
        data.flat[0] = draw(st.sampled_from([np.nan, np.inf, -1.5, 0.5]))
    buf = io.BytesIO()
    imagej = dtype in ("uint8", "uint16", "float32") and draw(st.booleans())
    axes = "TZYX"[-ndim:] if imagej else None
    try:
        tifffile.imwrite(buf, data, imagej=imagej, metadata={"axes": axes} if imagej else {},
                         compression=draw(st.sampled_from([None, "zlib"])))
    except (ValueError, TypeError):
        tifffile.imwrite(buf, data)
    raw = bytearray(buf.getvalue())
    # mutations: bytes of the header and the first IFD (tags), anywhere, or a truncation
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.one_of(st.integers(0, min(255, len(raw) - 1)), st.integers(0, len(raw) - 1)))
        raw[where] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


def _tiff_prop(raw: bytes, ndim):
    from cellinr.io.sources import open_source
    from cellinr.io.tiff import read_tiff

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.tif"
        path.write_bytes(raw)
        src = loads_or_refuses(open_source, path, ndim=ndim)
        if src is not None:
            with src:
                for t in range(min(src.n_frames, 4)):
                    loads_or_refuses(src.read_labels, t)
        loads_or_refuses(read_tiff, path)


test_fuzz_tiff, test_fuzz_tiff_slow = _both(_tiff_prop, tiff_bytes(), st.sampled_from([None, 2, 3]))


# ----------------------------------------------------------------------------------------------
# HDF5: any shape and dtype


_H5_DTYPES = ["bool", "int8", "uint8", "int16", "uint32", "int64", "uint64", "float16", "float32", "float64",
              "complex64", "S3"]


@st.composite
def h5_spec(draw):
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(_H5_DTYPES))
    name = draw(st.sampled_from(["sdf", "sdf_vid", "labels", "data"]))
    axes = draw(st.one_of(st.none(), st.text("TZYXCQ", max_size=6)))
    fill = draw(st.sampled_from([0, 1, -3, 2.5, np.nan, np.inf]))
    return shape, dtype, name, axes, fill


def _h5_prop(spec, dataset, ndim):
    import h5py

    from cellinr.io.sources import open_source

    shape, dtype, name, axes, fill = spec
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.h5"
        with h5py.File(path, "w") as f:
            try:
                data = np.full(shape, fill).astype(dtype)
            except (ValueError, OverflowError):
                data = np.zeros(shape, dtype)
            dset = f.create_dataset(name, data=data)
            if axes is not None:
                dset.attrs["axes"] = axes
        src = loads_or_refuses(open_source, path, dataset=dataset, ndim=ndim)
        if src is not None:
            with src:
                for t in range(min(src.n_frames, 3)):
                    loads_or_refuses(src.read_labels, t)


test_fuzz_hdf5, test_fuzz_hdf5_slow = _both(_h5_prop, h5_spec(), st.sampled_from([None, "sdf", "labels", "nope"]),
                                            st.sampled_from([None, 2, 3]))


# ----------------------------------------------------------------------------------------------
# JSON and YAML structures

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_json(draw, valid: dict):
    """``valid`` with random keys replaced or removed, or a random document, or random bytes."""
    kind = draw(st.sampled_from(["edit", "edit", "edit", "document", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "document":
        return json.dumps(draw(json_values), allow_nan=True).encode()
    data = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        node, keys = data, []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            keys.append(key)
            parent, node = node, node[key]
        if not keys:
            key = draw(st.sampled_from(sorted(data))) if data else "x"
            parent, keys = data, [key]
        if draw(st.booleans()) and isinstance(parent, dict) and keys[-1] in parent:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = draw(json_values)
    return json.dumps(data, allow_nan=True).encode()


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    """A valid prepared data set, run folder and reference experiment, written without training."""
    import h5py
    import torch

    from cellinr.io.sdf_dataset import new_manifest, write_manifest
    from cellinr.model.config import preset
    from cellinr.model.run import write_run_files
    from cellinr.nn.decoder import AutoDecoder

    root = tmp_path_factory.mktemp("fuzz")
    ds = root / "ds"
    ds.mkdir()
    with h5py.File(ds / "a.h5", "w") as f:
        f["sdf"] = np.ones((2, 4, 4, 4), np.float32)
    write_manifest(ds, new_manifest(size=4, clamp=2.0, voxel_size_um=1.0, scale_um_per_unit=2.0,
                                    sequences=[{"name": "a", "file": "a.h5", "frames": 2, "shape": [4, 4, 4]}]))
    cfg = preset("tiny")
    torch.manual_seed(0)
    decoder = AutoDecoder.from_config(cfg.model)
    write_run_files(root / "run", config=cfg, decoder=decoder, latents=torch.zeros(1, cfg.model.latent_dim),
                    rotations=torch.eye(3)[None], names=["a"], frames=[2],
                    manifest=json.loads((ds / "manifest.json").read_text()), info={"epochs": 1})
    return root


def _swap_file(folder: Path, name: str, raw: bytes) -> Path:
    work = Path(tempfile.mkdtemp())
    shutil.copytree(folder, work / folder.name)
    (work / folder.name / name).write_bytes(raw)
    return work / folder.name


def _manifest_prop(valid_files, raw):
    from cellinr.io.sdf_dataset import SDFDataset

    folder = _swap_file(valid_files / "ds", "manifest.json", raw)
    try:
        ds = loads_or_refuses(SDFDataset, folder)
        if ds is not None:
            for i in range(len(ds)):
                loads_or_refuses(ds.read_frame, i, 0)
    finally:
        shutil.rmtree(folder.parent)


def _manifest_strategy():
    from cellinr.io.sdf_dataset import new_manifest

    return mutated_json(new_manifest(size=4, clamp=2.0, voxel_size_um=1.0, scale_um_per_unit=2.0,
                                     sequences=[{"name": "a", "file": "a.h5", "frames": 2, "shape": [4, 4, 4]}]))


def _run_json_prop(valid_files, raw, name):
    from cellinr.model.run import load_run

    folder = _swap_file(valid_files / "run", name, raw)
    try:
        loads_or_refuses(load_run, folder)
    finally:
        shutil.rmtree(folder.parent)


_RUN_JSON = {"format": "cellinr-run", "format_version": 1, "version": "0", "names": ["a"], "frames": [2],
             "epochs": 1}
_RUN_MANIFEST = {"format": "cellinr-sdf-dataset", "size": 4, "clamp": 2.0, "voxel_size_um": 1.0,
                 "scale_um_per_unit": 2.0, "sequences": [{"name": "a", "file": "a.h5", "frames": 2, "shape": [4, 4, 4]}]}


@FAST
@given(raw=_manifest_strategy())
def test_fuzz_manifest(valid_files, raw):
    _manifest_prop(valid_files, raw)


@pytest.mark.slow
@SLOW
@given(raw=_manifest_strategy())
def test_fuzz_manifest_slow(valid_files, raw):
    _manifest_prop(valid_files, raw)


@FAST
@given(raw=st.one_of(mutated_json(_RUN_JSON).map(lambda r: ("run.json", r)),
                     mutated_json(_RUN_MANIFEST).map(lambda r: ("manifest.json", r))))
def test_fuzz_run_records(valid_files, raw):
    name, data = raw
    if name == "run.json":  # the model checksum in run.json would refuse every edit: drop it
        try:
            record = json.loads(data)
            if isinstance(record, dict):
                record.pop("model_sha256", None)
                data = json.dumps(record, allow_nan=True).encode()
        except ValueError:
            pass
    _run_json_prop(valid_files, data, name)


yaml_documents = st.one_of(
    json_values.map(lambda v: __import__("yaml").safe_dump(v)),
    st.dictionaries(st.sampled_from(["model", "sampling", "train", "preset", "other"]),
                    st.dictionaries(st.sampled_from(["lr_net", "lr_gamma", "epochs", "hidden", "latent_dim",
                                                     "fraction", "rotations", "clamp", "scheme", "omega_0"]),
                                    json_values, max_size=4), max_size=3).map(lambda v: __import__("yaml").safe_dump(v)),
    st.text(max_size=60),
)


def _yaml_prop(text):
    from cellinr.model.config import from_yaml, preset

    loads_or_refuses(from_yaml, text, preset("tiny"), source="c.yaml")


test_fuzz_config_yaml, test_fuzz_config_yaml_slow = _both(_yaml_prop, yaml_documents)


def _config_file_prop(raw: bytes):
    from cellinr.model.config import load_config

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.yaml").write_bytes(raw)
        loads_or_refuses(load_config, Path(d) / "c.yaml")


test_fuzz_config_bytes, test_fuzz_config_bytes_slow = _both(_config_file_prop, st.binary(max_size=80))

_TEXTURE = Path(__file__).resolve().parents[1] / "src/cellinr/bundled/texture_dsb2018"


def _texture_prop(raw: bytes):
    from cellinr.texture.apply import load_texture_model

    if not (_TEXTURE / "texture_model.json").is_file():
        pytest.skip("bundled texture model not installed")
    folder = _swap_file(_TEXTURE, "texture_model.json", raw)
    try:
        loads_or_refuses(load_texture_model, folder, device="cpu")
    finally:
        shutil.rmtree(folder.parent)


def _texture_strategy():
    valid = json.loads((_TEXTURE / "texture_model.json").read_text()) if (_TEXTURE / "texture_model.json").is_file() \
        else {"kind": "cellinr-texture-model"}
    return mutated_json(valid)


test_fuzz_texture_model, test_fuzz_texture_model_slow = _both(_texture_prop, _texture_strategy())


def _groups_prop(raw: bytes):
    from cellinr.evaluation.rotations import read_groups_file, rotation_metrics

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "g.json").write_bytes(raw)
        spec = loads_or_refuses(read_groups_file, Path(d) / "g.json")
        if spec is not None:
            codes = np.zeros((2, 3))
            rots = np.stack([np.eye(3)] * 2)
            loads_or_refuses(rotation_metrics, codes, rots, ["a", "b"], groups=spec.get("groups"),
                             applied=spec.get("rotations"), convention=spec.get("convention", "rotated"))


_GROUPS = {"groups": {"c": ["a", "b"]}, "rotations": {"a": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, "convention": "rotated"}
test_fuzz_groups, test_fuzz_groups_slow = _both(_groups_prop, mutated_json(_GROUPS))


def _csv_prop(text: str):
    from cellinr.measurement.tables import read_rows

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "t.csv").write_bytes(text.encode("utf-8", "replace"))
        loads_or_refuses(read_rows, Path(d) / "t.csv", finite=True)


csv_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.lists(st.sampled_from(["sequence", "frame", "ndim", "volume_um3", "a", "1", "nan", "inf", "",
                                       "3", "2", '"x,y"', "é"]), min_size=1, max_size=4), min_size=1, max_size=4)
    .map(lambda rows: "\n".join(",".join(r) for r in rows)),
)
test_fuzz_csv, test_fuzz_csv_slow = _both(_csv_prop, csv_text)


def test_rotation_metrics_signature():
    """The groups property calls rotation_metrics with these keywords: keep them in step."""
    import inspect

    from cellinr.evaluation.rotations import rotation_metrics

    params = inspect.signature(rotation_metrics).parameters
    assert {"groups", "applied", "convention"} <= set(params)
