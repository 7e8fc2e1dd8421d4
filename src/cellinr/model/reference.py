"""Import the authors' published models (MIAGroupUT/IMPLICIT-CELL-SURFACES) as run folders.

An experiment folder of the reference code holds::

    specs.json                    CodeLength, NetworkSpecs {dims, latent_in, xyz_in_all, ...},
                                  ReconstructionDims, ReconstructionFramesPerSequence, ...
    ModelParameters/<name>.pth    {"epoch", "model_state_dict"} or a bare state dict of lin0 ... linK,
                                  keys possibly prefixed "module." (saved from nn.DataParallel)
    LatentCodes/lat_vecs.mat      MATLAB file, variable lat_vecs (N, L)
    LatentCodes/rot_angs.mat      variable rot_ang (N, 3) Euler XYZ angles (or one row for all)

The reference evaluates ``f([z, c @ E(angles), t])`` for row-vector coordinates c, with
E = Rx @ Ry @ Rz (PyTorch3D ``euler_angles_to_matrix(., "XYZ")``). Our convention is
``f([z, xyz @ R.T, t])``, so R = E.T. The ``.pth`` file is read with ``torch.load(weights_only=True)``
and the ``.mat`` files with ``scipy.io.loadmat``: nothing executes code.

Axes: the reference indexes the network's coordinate columns by the axes of its own arrays, which
come from MATLAB volumes; ``axes`` says which of our axes (x = last array axis, y, z) each reference
column is. The default ``"xyz"`` keeps the network function unchanged; ``"yxz"`` maps MATLAB's
(row, column, slice) order, and ``"zyx"`` the reference's Python arrays written as (Z, Y, X). For a
permutation P the weights' coordinate columns are permuted and R = P E.T P.T, so the imported run
evaluates exactly the reference SDF at the permuted points.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from cellinr.errors import ConfigError, RunError

log = logging.getLogger(__name__)

_LIN = re.compile(r"^lin(\d+)\.(weight|bias|weight_g|weight_v)$")


def _load_state(path: Path) -> dict:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise RunError(f"{path}: cannot read the model ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict):
        raise RunError(f"{path}: not a state dict")
    state = {}
    for key, value in obj.items():
        name = key[len("module."):] if key.startswith("module.") else key
        state[name] = value
    return state


def _pick_model_file(folder: Path) -> Path:
    if not folder.is_dir():
        raise RunError(f"{folder}: missing (expected the reference's ModelParameters folder)")
    files = sorted(folder.glob("*.pth"))
    if not files:
        raise RunError(f"{folder}: no .pth model file")
    for preferred in ("latest.pth", "model.pth"):
        if (folder / preferred).is_file():
            return folder / preferred
    numbered = [(int(p.stem), p) for p in files if p.stem.isdigit()]
    if numbered:
        return max(numbered)[1]
    if len(files) > 1:
        raise RunError(f"{folder}: several model files ({', '.join(p.name for p in files)}); pass model_file")
    return files[0]


def _loadmat(path: Path, variable: str) -> np.ndarray:
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except (OSError, ValueError, NotImplementedError, TypeError, KeyError, IndexError, EOFError,
            UnicodeDecodeError, scipy.io.matlab.MatReadError) as exc:
        raise RunError(f"{path}: cannot read MATLAB file ({exc})") from None
    if variable not in data:
        raise RunError(f"{path}: no variable {variable!r}")
    try:
        values = np.asarray(data[variable], dtype=np.float64)
    except (TypeError, ValueError):
        raise RunError(f"{path}: variable {variable!r} is not a numeric matrix") from None
    if not np.isfinite(values).all():
        raise RunError(f"{path}: variable {variable!r} holds NaN or infinite values")
    return values


def _specs_schema():
    from cellinr._util.schema import POSITIVE, POSITIVE_INT, ListOf, Opt

    return {"CodeLength": POSITIVE_INT, "?Omega": POSITIVE, "?ReconstructionFramesPerSequence": POSITIVE_INT,
            "?ReconstructionDims": Opt(ListOf(POSITIVE_INT, min_length=1)),
            "NetworkSpecs": {"dims": ListOf(POSITIVE_INT, min_length=1), "?latent_in": ListOf(int),
                             "?xyz_in_all": bool, "?use_sine": bool, "?use_tanh": bool, "?weight_norm": bool,
                             "?latent_dropout": bool}}


SPECS_SCHEMA = _specs_schema()


def _find(exp: Path, names: list[str]) -> Path | None:
    for name in names:
        if (exp / name).is_file():
            return exp / name
    return None


def import_reference(
    experiment_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_file: str | os.PathLike | None = None,
    axes: str = "xyz",
    overwrite: bool = False,
) -> Path:
    """Convert a reference experiment folder into a run folder; returns ``out``.

    Parameters
    ----------
    experiment_dir : folder with specs.json, ModelParameters/, LatentCodes/ (see module doc).
    model_file : the .pth to use (default: latest.pth, model.pth, the highest epoch number, or the only one).
    axes : which of our axes each reference coordinate column is (a permutation of "xyz").
    overwrite : replace an existing ``out``.
    """
    import torch

    from cellinr._util.outputs import atomic_dir, check_new_output, check_no_overlap
    from cellinr._util.schema import read_json
    from cellinr.model.config import Config, ModelConfig, TrainConfig, validate
    from cellinr.model.run import write_run_files
    from cellinr.nn.decoder import AutoDecoder
    from cellinr.nn.rotation import euler_xyz_to_matrix

    exp = Path(experiment_dir)
    if sorted(axes) != ["x", "y", "z"]:
        raise RunError(f"axes={axes!r}: must be a permutation of 'xyz'")
    specs_path = exp / "specs.json"
    if not specs_path.is_file():
        raise RunError(f"{exp}: not a reference experiment folder (no specs.json)")
    check_no_overlap([exp, model_file], [out])
    check_new_output(out, overwrite=overwrite)
    specs = read_json(specs_path, SPECS_SCHEMA, error=RunError, what="specs.json")
    net = specs["NetworkSpecs"]
    for key in ("use_tanh", "positional_encoding", "latent_dropout"):
        if net.get(key):
            raise RunError(f"{specs_path}: NetworkSpecs.{key} = true is not supported")
    if net.get("norm_layers") and not net.get("weight_norm"):
        raise RunError(f"{specs_path}: NetworkSpecs.norm_layers (LayerNorm) is not supported")
    activation = "sine" if net.get("use_sine", True) else "relu"
    try:  # a layout the decoder can build, or one line naming the key
        model_cfg = validate(Config(model=ModelConfig(
            latent_dim=int(specs["CodeLength"]), hidden=[int(d) for d in net["dims"]],
            latent_in=[int(k) for k in net.get("latent_in", [])], xyz_in_all=bool(net.get("xyz_in_all", False)),
            activation=activation, omega_0=float(specs.get("Omega", 30.0)),
        ))).model
    except ConfigError as exc:
        raise RunError(f"{specs_path}: NetworkSpecs do not form a valid network ({exc})") from None

    path = Path(model_file) if model_file is not None else _pick_model_file(exp / "ModelParameters")
    state = _load_state(path)
    decoder = AutoDecoder.from_config(model_cfg)
    linears = [layer.linear for layer in decoder.layers] + [decoder.output]
    found: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _LIN.match(key)
        if m is None:
            raise RunError(f"{path}: unexpected parameter {key!r} (not a lin<k> layer)")
        found.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if sorted(found) != list(range(len(linears))):
        raise RunError(f"{path}: has layers {sorted(found)}, the specs need lin0..lin{len(linears) - 1}")
    # reference column j is our axis axes[j]: c = xyz @ P, and g(w) = f(w @ P) has W_g = W_f @ P.T
    p = torch.zeros(3, 3, dtype=torch.float64)
    for j, a in enumerate(axes):
        p["xyz".index(a), j] = 1.0  # c = xyz @ p
    with torch.no_grad():
        for k, lin in enumerate(linears):
            params = found[k]
            if "weight" in params:
                w = params["weight"].double()
            elif "weight_g" in params and "weight_v" in params:  # nn.utils.weight_norm
                v = params["weight_v"].double()
                w = params["weight_g"].double() * v / v.norm(dim=1, keepdim=True)
            else:
                raise RunError(f"{path}: lin{k} has no weight")
            if "bias" not in params:
                raise RunError(f"{path}: lin{k} has no bias")
            if tuple(w.shape) != tuple(lin.weight.shape):
                raise RunError(
                    f"{path}: lin{k}.weight has shape {tuple(w.shape)}, the specs give {tuple(lin.weight.shape)}"
                )
            cols = decoder._slices[k].get("xyzt")
            if cols is not None:
                xyz = slice(cols.start, cols.start + 3)
                w[:, xyz] = w[:, xyz] @ p.T
            lin.weight.copy_(w.float())
            lin.bias.copy_(params["bias"].float().reshape(lin.bias.shape))

    lat_path = _find(exp, ["LatentCodes/lat_vecs.mat", "LatentCodes/latent_vecs.mat", "latent_vecs.mat", "lat_vecs.mat"])
    if lat_path is None:
        raise RunError(f"{exp}: no LatentCodes/lat_vecs.mat")
    latents = _loadmat(lat_path, "lat_vecs")
    if latents.ndim == 1:
        latents = latents[None]
    if latents.ndim != 2 or latents.shape[1] != model_cfg.latent_dim:
        raise RunError(f"{lat_path}: lat_vecs has shape {latents.shape}, expected (N, {model_cfg.latent_dim})")
    n = latents.shape[0]
    rot_path = _find(exp, ["LatentCodes/rot_angs.mat", "LatentCodes/rot_ang.mat", "rot_angs.mat", "rot_ang.mat"])
    if rot_path is None:
        log.warning("%s: no rot_angs.mat; using identity rotations", exp)
        angles = np.zeros((n, 3))
    else:
        angles = _loadmat(rot_path, "rot_ang").reshape(-1, 3)
        if angles.shape[0] == 1:
            angles = np.repeat(angles, n, axis=0)
        if angles.shape[0] != n:
            raise RunError(f"{rot_path}: {angles.shape[0]} rotations for {n} latent codes")
    e = euler_xyz_to_matrix(torch.from_numpy(angles))
    rotations = (p @ e.transpose(1, 2) @ p.T).float()

    frames = int(specs.get("ReconstructionFramesPerSequence", 30))
    dims = specs.get("ReconstructionDims")
    config = validate(Config(model=model_cfg, train=TrainConfig(rotations=rot_path is not None), preset="reference"))
    manifest = {
        # the reference divides by max|SDF| >= its 32-voxel outside clamp, so 32 voxels per unit is a
        # lower bound on the true scale: it keeps the fast evaluator's distance bound on the safe side
        "format": "imported-reference", "size": int(dims[0]) if dims else 256, "clamp": 32.0,
        "voxel_size_um": None, "scale_um_per_unit": None,
        "sources": [str(exp.resolve())], "axes": axes,
    }
    names = [f"seq_{i:03d}" for i in range(n)]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_run_files(
            tmp, config=config, decoder=decoder, latents=torch.from_numpy(latents).float(), rotations=rotations,
            names=names, frames=[frames] * n, manifest=manifest,
            info={"imported_from": str(exp.resolve()), "model_file": str(path), "axes": axes,
                  "epochs": None, "shape": [int(d) for d in dims] if dims else None},
        )
    return Path(out)
