"""Import the authors' published models (MIAGroupUT/IMPLICIT-CELL-SURFACES) as run folders.

Experiment folders as the authors' code writes and reads them (``lib/workspace.py`` names the
sub-folders in lower case; folder names are matched here in any case, with or without ``_``)::

    specs.json                              CodeLength, NetworkSpecs {dims, latent_in, xyz_in_all, ...},
                                            ReconstructionDims, ReconstructionFramesPerSequence, ...
    model_parameters/model.pth              what the published test.py reads (the shipped models)
    latent_codes/lat_vecs.mat               variable lat_vecs (N, L)
    latent_codes/rot_angs.mat               variable rot_ang (N, 3), Euler XYZ angles in radians
    model_parameters/eNNNN_model.pth        training snapshots of epoch NNNN (at least 4 digits), with
    latent_codes/eNNNN_lat_vecs.mat         the codes and rotations of the same epoch (test.py -e N);
    latent_codes/eNNNN_rot_angs.mat         ``eNNNN.pth`` in one early commit
    model_parameters/latest.pth             2022 / April 2023 code, with lat_vecs.mat (or
                                            latent_vecs.mat) and rot_angs.mat at the experiment root,
                                            or no rotations at all (MICCAI 2022)
    rot_ang.mat                             one rotation for every sequence (the svens_equi_decoder
                                            branch), applied the other way round (see below)

Checkpoints are ``{"epoch", "model_state_dict"}`` (or a bare state dict) of ``lin0 ... linK``, keys
prefixed ``module.`` (saved from ``nn.DataParallel``); ``weight_g``/``weight_v`` pairs (weight norm)
are folded into plain weights. Every specs.json key that changes the forward pass is honoured
(CodeLength, dims, latent_in, xyz_in_all, use_sine, weight_norm); train-only keys (dropout,
latent_dropout) have no effect on evaluation; use_tanh and LayerNorm (norm_layers without
weight_norm) are refused; positional_encoding is accepted when the weights show that it was not
applied (as in the published code, which ignores it). omega is the authors' constant 30.

The authors evaluate ``f([z, c @ E(angles), t])`` for row-vector coordinates c with
E = Rx @ Ry @ Rz (PyTorch3D ``euler_angles_to_matrix(., "XYZ")``); the ``rot_ang.mat`` branch uses
``c @ E.T``. cellinr evaluates ``f([z, R xyz, t])``, so R = E.T (E for ``rot_ang.mat``).

Axes: the authors' grid is ``np.mgrid`` over ``ReconstructionDims`` (N0, N1, N2), coordinate column
k = array axis k, each in [-1, 1], and their reconstruction is the array (F, N0, N1, N2). ``axes``
says which of cellinr's axes (x = last array axis, y, z = first) each of their columns is. The
default ``"zyx"`` puts column 0 on Z, so ``cellinr reconstruct`` of the imported run gives the
authors' array itself, (T, Z, Y, X) = (F, N0, N1, N2), and equals cellinr's reading of the authors'
``sdf_vid`` files (:mod:`cellinr.io.arrays`). Other permutations reorder the axes of the output
(``"xyz"`` gives the array transposed). For a permutation P the weights' coordinate columns are
permuted and R = P E.T P.T, so the imported run evaluates exactly the reference SDF at the permuted
points. The ``.pth`` files are read with ``torch.load(weights_only=True)`` and the ``.mat`` files with
``scipy.io.loadmat``: nothing executes code.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr.errors import ConfigError, RunError

log = logging.getLogger(__name__)

#: Default axis mapping: the authors' column k is cellinr's axis k of (Z, Y, X).
DEFAULT_AXES = "zyx"
#: The authors' SIREN frequency (a module constant ``OMEGA`` in their decoder, not a specs key).
REFERENCE_OMEGA = 30.0
#: Rotation conventions: how the angles act on the authors' row-vector coordinates.
ROTATION_CONVENTIONS = {"c @ E": "rot_angs.mat (published code)", "c @ E.T": "rot_ang.mat (one rotation)"}

_LIN = re.compile(r"^lin(\d+)\.(weight|bias|weight_g|weight_v)$")
_SNAPSHOT = re.compile(r"^e(\d+)(?:_model)?\.pth$", re.IGNORECASE)
_MODEL_DIR = "modelparameters"
_CODES_DIR = "latentcodes"


@dataclass
class ReferenceFiles:
    """The files of one experiment folder that make up one model (see :func:`find_reference_files`)."""

    model: Path
    epoch: int | None
    """Epoch of an ``eNNNN`` snapshot, or the checkpoint's own ``epoch`` entry, or None."""
    codes: Path
    rotations: Path | None
    convention: str
    """``"c @ E"`` or ``"c @ E.T"`` (see :data:`ROTATION_CONVENTIONS`)."""
    note: str = ""
    """Which snapshot was taken and why, for the user."""


def _subfolder(exp: Path, key: str) -> Path | None:
    """The sub-folder whose name, lower-cased without ``_``, is ``key`` (``model_parameters``, ``ModelParameters``)."""
    found = sorted(p for p in exp.iterdir() if p.is_dir() and p.name.lower().replace("_", "") == key)
    if not found:
        return None
    exact = [p for p in found if p.name == p.name.lower()]
    return (exact or found)[0]


def _file(folder: Path | None, name: str) -> Path | None:
    """``folder/name`` matched in any case, or None."""
    if folder is None or not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower() == name.lower():
            return p
    return None


def _snapshots(folder: Path) -> dict[int, Path]:
    """epoch -> ``eNNNN_model.pth`` (or ``eNNNN.pth``) in ``folder``."""
    found = {}
    for p in folder.iterdir():
        m = _SNAPSHOT.match(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return found


def _epoch_file(folder: Path | None, epoch: int, suffix: str) -> Path | None:
    """``eNNNN_<suffix>`` of ``epoch`` in ``folder`` (any number of digits, any case)."""
    if folder is None or not folder.is_dir():
        return None
    pattern = re.compile(rf"^e(\d+)_{re.escape(suffix)}$", re.IGNORECASE)
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if m and int(m.group(1)) == epoch and p.is_file():
            return p
    return None


def find_reference_files(experiment_dir: str | os.PathLike, *, epoch: int | None = None,
                         model_file: str | os.PathLike | None = None) -> ReferenceFiles:
    """Locate the model, codes and rotations of an experiment folder (layouts: module docstring).

    Parameters
    ----------
    experiment_dir : the authors' experiment folder.
    epoch : take the ``eNNNN_*`` snapshot of this epoch (the authors' ``test.py -e``).
    model_file : a ``.pth`` to use instead (its codes are looked up as for ``model.pth``).

    Without ``epoch``: ``model.pth`` (what the published test.py reads), else ``latest.pth``, else
    the latest ``eNNNN`` snapshot (the choice is reported in ``note``).

    Raises
    ------
    RunError : a file is missing; the message names what was looked for.
    """
    exp = Path(experiment_dir)
    model_dir = _subfolder(exp, _MODEL_DIR)
    codes_dir = _subfolder(exp, _CODES_DIR)
    note = ""
    snapshot_epoch = None
    if model_file is not None:
        model = Path(model_file)
        if not model.is_file():
            raise RunError(f"{model}: model file not found")
        m = _SNAPSHOT.match(model.name)
        snapshot_epoch = int(m.group(1)) if m else None
    else:
        if model_dir is None:
            raise RunError(f"{exp}: no model_parameters folder (not an experiment folder of the authors' code)")
        snaps = _snapshots(model_dir)
        if epoch is not None:
            if int(epoch) not in snaps:
                shown = ", ".join(str(e) for e in sorted(snaps)) or "none"
                raise RunError(f"{model_dir}: no snapshot of epoch {epoch} (e{int(epoch):04d}_model.pth); "
                               f"snapshots: {shown}")
            model, snapshot_epoch = snaps[int(epoch)], int(epoch)
        elif _file(model_dir, "model.pth") is not None:
            model = _file(model_dir, "model.pth")
            if snaps:
                note = (f"using {model.name}; the folder also holds snapshots of epochs "
                        f"{min(snaps)}-{max(snaps)} (choose one with --epoch)")
        elif _file(model_dir, "latest.pth") is not None:
            model = _file(model_dir, "latest.pth")
        elif snaps:
            snapshot_epoch = max(snaps)
            model = snaps[snapshot_epoch]
            if len(snaps) > 1:
                note = (f"{len(snaps)} snapshots (epochs {min(snaps)}-{max(snaps)}); using the latest, "
                        f"epoch {snapshot_epoch} ({model.name}); choose another with --epoch")
        else:
            raise RunError(f"{model_dir}: no model.pth, latest.pth or eNNNN_model.pth")

    if snapshot_epoch is not None:
        codes = _epoch_file(codes_dir, snapshot_epoch, "lat_vecs.mat")
        if codes is None:
            raise RunError(f"{codes_dir or exp / 'latent_codes'}: no e{snapshot_epoch:04d}_lat_vecs.mat for "
                           f"{model.name} (the codes must come from the same epoch as the weights)")
        rotations = _epoch_file(codes_dir, snapshot_epoch, "rot_angs.mat")
        return ReferenceFiles(model, snapshot_epoch, codes, rotations, "c @ E", note)
    candidates = [(codes_dir, "lat_vecs.mat"), (exp, "lat_vecs.mat"), (exp, "latent_vecs.mat"),
                  (codes_dir, "latent_vecs.mat"), (codes_dir, "latest.pth")]
    codes = next((p for p in (_file(d, n) for d, n in candidates) if p is not None), None)
    if codes is None:
        hint = ""
        if codes_dir is not None and any(re.match(r"^e\d+_lat_vecs\.mat$", p.name, re.IGNORECASE)
                                          for p in codes_dir.iterdir()):
            hint = "; the folder holds eNNNN_lat_vecs.mat snapshots: pass --epoch N to import one"
        raise RunError(f"{exp}: no latent codes for {model.name} (looked for latent_codes/lat_vecs.mat, "
                       f"lat_vecs.mat, latent_vecs.mat, latent_codes/latest.pth){hint}")
    rotations, convention = None, "c @ E"
    for folder in (codes_dir, exp):
        if (p := _file(folder, "rot_angs.mat")) is not None:
            rotations = p
            break
    if rotations is None:
        for folder in (codes_dir, exp):
            if (p := _file(folder, "rot_ang.mat")) is not None:
                rotations, convention = p, "c @ E.T"
                break
    return ReferenceFiles(model, None, codes, rotations, convention, note)


def _load_torch(path: Path):
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise RunError(f"{path}: cannot read ({str(exc).splitlines()[0][:200]})") from None


def _load_state(path: Path) -> tuple[dict, int | None]:
    """The state dict (``module.`` stripped) and the checkpoint's ``epoch`` entry."""
    obj = _load_torch(path)
    epoch = None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        epoch = obj.get("epoch")
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict):
        raise RunError(f"{path}: not a state dict")
    state = {}
    for key, value in obj.items():
        state[key.removeprefix("module.")] = value
    return state, (int(epoch) if isinstance(epoch, (int, np.integer)) else None)


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


def _load_codes(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".pth":  # 2022 code: {"epoch", "latent_codes": Embedding.state_dict()}
        obj = _load_torch(path)
        table = obj.get("latent_codes", obj) if isinstance(obj, dict) else None
        weight = table.get("weight") if isinstance(table, dict) else None
        if weight is None:
            raise RunError(f"{path}: no latent_codes.weight")
        return np.asarray(weight.detach().double().numpy())
    return _loadmat(path, "lat_vecs")


def _read_specs(exp: Path):
    from cellinr._util.schema import read_json
    from cellinr.model.config import Config, ModelConfig, validate

    specs_path = exp / "specs.json"
    if not specs_path.is_file():
        raise RunError(f"{exp}: not a reference experiment folder (no specs.json)")
    specs = read_json(specs_path, SPECS_SCHEMA, error=RunError, what="specs.json")
    net = specs["NetworkSpecs"]
    if net.get("use_tanh"):
        raise RunError(f"{specs_path}: NetworkSpecs.use_tanh = true (a tanh output) is not supported")
    if net.get("norm_layers") and not net.get("weight_norm"):
        raise RunError(f"{specs_path}: NetworkSpecs.norm_layers without weight_norm (LayerNorm) is not supported")
    try:  # a layout the decoder can build, or one line naming the key
        model_cfg = validate(Config(model=ModelConfig(
            latent_dim=int(specs["CodeLength"]), hidden=[int(d) for d in net["dims"]],
            latent_in=[int(k) for k in net.get("latent_in", [])], xyz_in_all=bool(net.get("xyz_in_all", False)),
            activation="sine" if net.get("use_sine", True) else "relu", omega_0=REFERENCE_OMEGA,
        ))).model
    except ConfigError as exc:
        raise RunError(f"{specs_path}: NetworkSpecs do not form a valid network ({exc})") from None
    return specs, specs_path, model_cfg


def import_reference(
    experiment_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    epoch: int | None = None,
    model_file: str | os.PathLike | None = None,
    axes: str = DEFAULT_AXES,
    overwrite: bool = False,
) -> Path:
    """Convert a reference experiment folder into a run folder; returns ``out``.

    Parameters
    ----------
    experiment_dir : the authors' experiment folder (layouts: module docstring).
    epoch : import the training snapshot of this epoch (``eNNNN_model.pth`` with the codes and
        rotations of the same epoch). Default: ``model.pth``, ``latest.pth`` or the latest snapshot
        (logged when there were several).
    model_file : a ``.pth`` to use instead.
    axes : which of cellinr's axes each of the authors' coordinate columns is (a permutation of
        "xyz"); the default ``"zyx"`` makes reconstructions equal the authors' arrays.
    overwrite : replace an existing ``out``.

    Raises
    ------
    RunError : a missing file, unsupported specs, or weights that do not fit specs.json (the
        message names the layer and both shapes).
    """
    import torch

    from cellinr._util.outputs import atomic_dir, check_new_output, check_no_overlap
    from cellinr.model.config import Config, TrainConfig, validate
    from cellinr.model.run import write_run_files
    from cellinr.nn.decoder import AutoDecoder
    from cellinr.nn.rotation import euler_xyz_to_matrix

    exp = Path(experiment_dir)
    if not exp.is_dir():
        raise RunError(f"{exp}: experiment folder not found")
    if not isinstance(axes, str) or sorted(axes) != ["x", "y", "z"]:
        raise RunError(f"axes={axes!r}: must be a permutation of 'xyz'")
    if epoch is not None and model_file is not None:
        raise RunError("give either --epoch or --model-file, not both")
    if epoch is not None and int(epoch) < 0:
        raise RunError(f"--epoch {epoch}: must be >= 0")
    check_no_overlap([exp, model_file], [out])
    check_new_output(out, overwrite=overwrite)
    specs, specs_path, model_cfg = _read_specs(exp)
    files = find_reference_files(exp, epoch=epoch, model_file=model_file)
    if files.note:
        log.warning("%s: %s", exp, files.note)
    state, saved_epoch = _load_state(files.model)
    decoder = AutoDecoder.from_config(model_cfg)
    linears = [layer.linear for layer in decoder.layers] + [decoder.output]
    found: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _LIN.match(key)
        if m is None:
            raise RunError(f"{files.model}: unexpected parameter {key!r} (not a lin<k> layer)")
        found.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if sorted(found) != list(range(len(linears))):
        raise RunError(f"{files.model}: has layers lin{min(found, default=0)}..lin{max(found, default=0)}, "
                       f"{specs_path.name} needs lin0..lin{len(linears) - 1} "
                       f"({len(model_cfg.hidden)} hidden layers in NetworkSpecs.dims)")
    # the authors' column j is our axis axes[j]: c = xyz @ P, and g(w) = f(w @ P) has W_g = W_f @ P.T
    p = torch.zeros(3, 3, dtype=torch.float64)
    for j, a in enumerate(axes):
        p["xyz".index(a), j] = 1.0
    with torch.no_grad():
        for k, lin in enumerate(linears):
            params = found[k]
            if "weight" in params:
                w = params["weight"].double()
            elif "weight_g" in params and "weight_v" in params:  # nn.utils.weight_norm
                v = params["weight_v"].double()
                w = params["weight_g"].double() * v / v.norm(dim=1, keepdim=True)
            else:
                raise RunError(f"{files.model}: lin{k} has no weight")
            if "bias" not in params:
                raise RunError(f"{files.model}: lin{k} has no bias")
            if tuple(w.shape) != tuple(lin.weight.shape):
                raise RunError(
                    f"{files.model}: lin{k}.weight has shape {tuple(w.shape)}, {specs_path.name} gives "
                    f"{tuple(lin.weight.shape)} (CodeLength {model_cfg.latent_dim}, NetworkSpecs.dims, latent_in, "
                    "xyz_in_all)"
                )
            if tuple(params["bias"].reshape(-1).shape) != tuple(lin.bias.shape):
                raise RunError(f"{files.model}: lin{k}.bias has shape {tuple(params['bias'].shape)}, "
                               f"{specs_path.name} gives {tuple(lin.bias.shape)}")
            cols = decoder._slices[k].get("xyzt")
            if cols is not None:
                xyz = slice(cols.start, cols.start + 3)
                w[:, xyz] = w[:, xyz] @ p.T
            lin.weight.copy_(w.float())
            lin.bias.copy_(params["bias"].float().reshape(lin.bias.shape))
    if specs.get("NetworkSpecs", {}).get("positional_encoding"):
        log.info("%s: NetworkSpecs.positional_encoding is set, but lin0 takes the plain coordinates "
                 "(the published code ignores the key)", specs_path)

    latents = _load_codes(files.codes)
    if latents.ndim == 1:
        latents = latents[None]
    if latents.ndim != 2 or latents.shape[1] != model_cfg.latent_dim:
        raise RunError(f"{files.codes}: lat_vecs has shape {latents.shape}, expected (N, {model_cfg.latent_dim})")
    n = latents.shape[0]
    if specs.get("NumSequences") not in (None, n):
        log.warning("%s: NumSequences is %s, but %s holds %d codes; importing %d", specs_path,
                    specs["NumSequences"], files.codes.name, n, n)
    if files.rotations is None:
        log.info("%s: no rotation file; the sequences are not rotated (identity)", exp)
        angles = np.zeros((n, 3))
    else:
        angles = _loadmat(files.rotations, "rot_ang").reshape(-1, 3)
        if angles.shape[0] == 1:
            angles = np.repeat(angles, n, axis=0)
        if angles.shape[0] != n:
            raise RunError(f"{files.rotations}: {angles.shape[0]} rotations for {n} latent codes")
    e = euler_xyz_to_matrix(torch.from_numpy(angles))
    # network input c' = c @ E = E.T c (published) or c @ E.T = E c (rot_ang.mat), in the authors' columns
    r_ref = e.transpose(1, 2) if files.convention == "c @ E" else e
    rotations = (p @ r_ref @ p.T).float()

    frames = int(specs.get("ReconstructionFramesPerSequence", 30))
    dims_ref = [int(d) for d in specs["ReconstructionDims"]] if specs.get("ReconstructionDims") else None
    # the authors' (N0, N1, N2) in cellinr's (Z, Y, X) order: our axis a carries their column axes.index(a)
    dims = [dims_ref[axes.index(a)] for a in "zyx"] if dims_ref else None
    config = validate(Config(model=model_cfg, train=TrainConfig(rotations=files.rotations is not None),
                             preset="reference"))
    manifest = {
        # the reference divides by max|SDF| >= its 32-voxel outside clamp, so 32 voxels per unit is a
        # lower bound on the true scale: it keeps the fast evaluator's distance bound on the safe side
        "format": "imported-reference", "size": max(dims) if dims else 256, "clamp": 32.0,
        "voxel_size_um": None, "scale_um_per_unit": None,
        "sources": [str(exp.resolve())], "axes": axes,
    }
    if dims and len(set(dims)) > 1:
        manifest["dims"] = dims
    names = [f"seq_{i:03d}" for i in range(n)]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_run_files(
            tmp, config=config, decoder=decoder, latents=torch.from_numpy(latents).float(), rotations=rotations,
            names=names, frames=[frames] * n, manifest=manifest,
            info={"imported_from": str(exp.resolve()), "model_file": str(files.model),
                  "codes_file": str(files.codes), "rotations_file": None if files.rotations is None else str(files.rotations),
                  "rotation_convention": files.convention, "axes": axes,
                  "epochs": files.epoch if files.epoch is not None else saved_epoch,
                  "reconstruction_dims": dims_ref, "shape": dims},
        )
    return Path(out)
