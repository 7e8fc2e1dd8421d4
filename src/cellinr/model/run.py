"""The run folder: a self-describing trained shape model.

Layout of ``RUN_DIR``::

    config.yaml            the full Config (cellinr.model.config), reloaded exactly
    model.safetensors      the AutoDecoder state dict
    latents.safetensors    "latents" (N, L) float32, "rotations" (N, 3, 3) float32 (identity when not
                           learned), and "rotation_params" when rotations were learned
    run.json               format, package version, sequence names and frame counts, grid shape,
                           epochs, seed, sha256 of model.safetensors; written last (marks completion)
    manifest.json          copy of the SDF data set's manifest (size, clamp, voxel_size_um, scale_um_per_unit)
    log.csv, loss.png      training log and loss curve
    checkpoints/           epoch_NNNNNNN.pt, for --resume

Loading reads safetensors and JSON/YAML only, so it never executes code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cellinr._util.jsonsafe import file_header, file_type_of, tool_version_of
from cellinr.errors import ConfigError, ParameterError, RunError

if TYPE_CHECKING:
    import torch

    from cellinr.model.config import Config
    from cellinr.nn.decoder import AutoDecoder

FORMAT_NAME = "cellinr-run"
FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
LATENTS_FILE = "latents.safetensors"
RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
LOG_FILE = "log.csv"
LOSS_PLOT = "loss.png"
REQUIRED = (CONFIG_FILE, MODEL_FILE, LATENTS_FILE, RUN_FILE)


@dataclass
class Run:
    """A loaded run folder (see :func:`load_run`) and the quantities derived from its files.

    The decoder evaluates ``f(z, R x, t)`` on coordinates in [-1, 1]: the training cube of
    ``training_size`` voxels per axis (``manifest["size"]``), whose SDF was clipped at
    ``manifest["clamp"]`` voxels and divided by it.
    """

    path: Path
    config: Config
    decoder: AutoDecoder
    latents: torch.Tensor
    """(N, L) float32 learned codes, on the run's device."""
    rotations: torch.Tensor
    """(N, 3, 3) float32 learned rotations (identity when none were learned)."""
    names: list[str]
    frames: list[int]
    manifest: dict = field(default_factory=dict)
    model_hash: str = ""
    version: str = ""
    info: dict = field(default_factory=dict)
    scales: list[float] | None = None
    """Per sequence, the size relative to its code's shape (fitted sequences, :func:`apply_fit`); None: 1."""

    def __len__(self) -> int:
        return len(self.names)

    @property
    def originals(self) -> int:
        """Number of training sequences proper: the rows after them are augmented copies (``train.augment``)."""
        aug = self.info.get("augment") if isinstance(self.info, dict) else None
        return int(aug["originals"]) if isinstance(aug, dict) and "originals" in aug else len(self.names)

    def field(self, index: int):
        """The SDF function of training sequence ``index`` (see ``AutoDecoder.field``)."""
        return self.decoder.field(self.latents[index], self.rotations[index], self.scale_of(index))

    def scale_of(self, index: int) -> float:
        """Size of sequence ``index`` relative to its code's shape (1 but for fitted cells out of the codes' sizes)."""
        return 1.0 if self.scales is None else float(self.scales[index])

    # -- derived quantities ------------------------------------------------------------------
    @property
    def training_size(self) -> int | None:
        """Edge (voxels) of the training cube, or None when the manifest does not record it."""
        size = self.manifest.get("size") or max(self.manifest.get("dims") or [0]) or None
        return None if size is None else int(size)

    @property
    def sdf_unit(self) -> float:
        """Length of one SDF unit in coordinate units: ``clamp * 2 / (size - 1)``."""
        size, clamp = self.training_size, self.manifest.get("clamp")
        if not size or not clamp or size < 2:
            raise RunError(f"{self.path}: the run's manifest lacks 'size' or 'clamp'")
        return float(clamp) * 2.0 / (size - 1)

    @property
    def voxel_size_um(self) -> tuple[float, float, float] | None:
        """Voxel size (Z, Y, X) microns of the training cube, or None when unknown."""
        vox = self.manifest.get("voxel_size_um")
        if vox is None:
            return None
        z, y, x = np.broadcast_to(np.asarray(vox, dtype=np.float64), (3,))
        return float(z), float(y), float(x)

    def output_spacing(self, dims: tuple[int, int, int]) -> tuple[float, float, float] | None:
        """Voxel size (Z, Y, X) microns of an output grid ``dims`` spanning the training cube.

        An axis of D voxels has voxel size ``voxel_size_um * (size - 1) / (D - 1)``.
        """
        vox, size = self.voxel_size_um, self.training_size
        if vox is None or not size:
            return None
        z, y, x = (float(v * (size - 1) / (d - 1)) if d > 1 else float(v) for v, d in zip(vox, dims))
        return z, y, x

    @property
    def frame_interval(self) -> float | None:
        """Minutes between the training frames (``manifest["frame_interval_min"]``), None when unknown."""
        value = self.manifest.get("frame_interval_min")
        return None if value is None else float(value)

    def output_frame_interval(self, frames: int, index: int | None = None) -> float | None:
        """Minutes between ``frames`` output frames spanning training sequence ``index`` (default: the
        longest) in time, or None when the training interval is unknown."""
        interval = self.frame_interval
        span = self.max_frames if index is None else int(self.frames[index])
        if interval is None or frames < 2 or span < 2:
            return interval
        return interval * (span - 1) / (frames - 1)

    def trajectory(self, index: int) -> np.ndarray | None:
        """(T, 3) centroid path (Z, Y, X microns) of training sequence ``index``, or None when not recorded.

        From the data set's manifest (``trajectory_um``, written by ``prepare``): with per-frame centring
        the data set holds each cell's shape and this holds its motion.
        """
        name = self.names[index]
        for entry in self.manifest.get("sequences", []) if isinstance(self.manifest, dict) else []:
            if isinstance(entry, dict) and entry.get("name") == name and entry.get("trajectory_um") is not None:
                path = np.asarray(entry["trajectory_um"], dtype=np.float64)
                return path if path.ndim == 2 and path.shape[1] == 3 and np.isfinite(path).all() else None
        return None

    @property
    def codes(self) -> np.ndarray:
        """(N, L) float32 learned codes as a NumPy array."""
        return self.latents.detach().cpu().numpy().astype(np.float32)

    @property
    def rotation_matrices(self) -> np.ndarray:
        """(N, 3, 3) float64 learned rotations as a NumPy array."""
        return self.rotations.detach().cpu().numpy().astype(np.float64)

    @property
    def max_frames(self) -> int:
        """The largest training frame count (1 when unknown)."""
        return int(max(self.frames)) if self.frames else 1

    def code_index(self, key: str | int) -> int:
        """Index of a learned code given a sequence name or an index (negative counts from the end)."""
        if isinstance(key, str) and key in self.names:
            return self.names.index(key)
        try:
            index = int(key)
        except (TypeError, ValueError):
            shown = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
            raise ParameterError(f"{key!r}: not a sequence name of the run (names: {shown})") from None
        if not -len(self.names) <= index < len(self.names):
            raise ParameterError(f"{key}: code index out of range (the run has {len(self.names)} codes)")
        return index % len(self.names)


def _schemas():
    from cellinr._util.schema import (
        NON_NEGATIVE_INT,
        POSITIVE,
        POSITIVE_INT,
        ListOf,
        OneOf,
        Opt,
    )

    run = {"format": str, "names": ListOf(str), "frames": ListOf(POSITIVE_INT), "?model_sha256": Opt(str),
           "?epochs": Opt(NON_NEGATIVE_INT), "?version": Opt(str), "?cellinr_version": Opt(str)}
    manifest = {"?clamp": Opt(POSITIVE), "?size": Opt(POSITIVE_INT), "?dims": Opt(ListOf(POSITIVE_INT, length=3)),
                "?voxel_size_um": Opt(OneOf(POSITIVE, ListOf(POSITIVE, length=3))),
                "?scale_um_per_unit": Opt(POSITIVE), "?frame_interval_min": Opt(POSITIVE)}
    return run, manifest


RUN_SCHEMA, RUN_MANIFEST_SCHEMA = _schemas()


def _check_rotations(rotations, where: Path) -> None:
    """Refuse rotation matrices that are not rotations (R R^T = I, det R = 1, to float32 precision)."""
    import torch

    r = rotations.detach().to(torch.float64)
    if r.numel() == 0:
        return
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    err = (r @ r.transpose(-1, -2) - eye).abs().amax(dim=(-1, -2))
    det = torch.linalg.det(r)
    bad = torch.nonzero((err > 1e-3) | ((det - 1).abs() > 1e-3)).flatten()
    if len(bad):
        raise RunError(f"{where}: tensor 'rotations': entry {int(bad[0])} is not a rotation matrix")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_run_files(
    folder: str | os.PathLike, *, config, decoder, latents, rotations, names, frames, manifest: dict | None,
    info: dict | None = None, rotation_params=None,
) -> Path:
    """Write config, weights, codes, rotations, manifest copy and ``run.json`` (last) into ``folder``."""
    import torch

    from cellinr._util.native_writers import save_safetensors
    from cellinr._util.outputs import atomic_write_text
    from cellinr.model.config import save_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / CONFIG_FILE)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in decoder.state_dict().items()}
    save_safetensors(state, folder / MODEL_FILE, metadata={"format": FORMAT_NAME})
    tensors = {
        "latents": latents.detach().to("cpu", torch.float32).contiguous(),
        "rotations": rotations.detach().to("cpu", torch.float32).contiguous(),
    }
    if rotation_params is not None:
        tensors["rotation_params"] = rotation_params.detach().to("cpu", torch.float32).contiguous()
    save_safetensors(tensors, folder / LATENTS_FILE, metadata={"format": FORMAT_NAME})
    if manifest is not None:
        atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2))
    record = {
        **file_header(FORMAT_NAME, FORMAT_VERSION),
        "names": list(names), "frames": [int(f) for f in frames],
        "model_sha256": sha256_file(folder / MODEL_FILE), **(info or {}),
    }
    atomic_write_text(folder / RUN_FILE, json.dumps(record, indent=2))
    return folder


def load_run(path: str | os.PathLike, device="cpu") -> Run:
    """Load a run folder written by ``cellinr train`` or ``cellinr import-reference``.

    Parameters
    ----------
    path : the run folder.
    device : where to put the decoder, codes and rotations.

    Raises
    ------
    RunError : the folder is missing, incomplete (e.g. training not finished) or inconsistent.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cellinr.model.config import load_config
    from cellinr.nn.decoder import AutoDecoder

    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: run folder not found")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        hint = " (training not finished? continue it with --resume)" if (path / "checkpoints").is_dir() else ""
        raise RunError(f"{path}: incomplete run folder, missing {', '.join(missing)}{hint}")
    from cellinr._util.schema import finite_array, read_json

    info = read_json(path / RUN_FILE, RUN_SCHEMA, error=RunError, what="run record")
    if file_type_of(info) != FORMAT_NAME:
        raise RunError(f"{path / RUN_FILE}: not a {FORMAT_NAME} record")
    try:
        config = load_config(path / CONFIG_FILE)
    except ConfigError as exc:
        raise RunError(f"{path}: bad config: {exc}") from None
    device = torch.device(device)
    try:
        state = load_file(str(path / MODEL_FILE), device="cpu")
        tensors = load_file(str(path / LATENTS_FILE), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{path}: unreadable weights ({exc})") from None
    decoder = AutoDecoder.from_config(config.model)
    try:
        decoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RunError(f"{path / MODEL_FILE}: weights do not match config.yaml ({first})") from None
    decoder.to(device).eval()
    if "latents" not in tensors or "rotations" not in tensors:
        raise RunError(f"{path / LATENTS_FILE}: needs tensors 'latents' and 'rotations'")
    latents, rotations = tensors["latents"], tensors["rotations"]
    finite_array(latents, f"{path / LATENTS_FILE}: tensor 'latents' (codes)", error=RunError)
    finite_array(rotations, f"{path / LATENTS_FILE}: tensor 'rotations'", error=RunError)
    _check_rotations(rotations, path / LATENTS_FILE)
    for key, value in state.items():
        finite_array(value, f"{path / MODEL_FILE}: tensor {key!r}", error=RunError)
    names, frames = list(info.get("names", [])), [int(f) for f in info.get("frames", [])]
    n = len(names)
    if latents.shape != (n, config.model.latent_dim) or rotations.shape != (n, 3, 3) or len(frames) != n:
        raise RunError(
            f"{path}: inconsistent run: {n} names, {len(frames)} frame counts, latents {tuple(latents.shape)}, "
            f"rotations {tuple(rotations.shape)} (latent_dim {config.model.latent_dim})"
        )
    manifest = {}
    if (path / MANIFEST_FILE).is_file():
        manifest = read_json(path / MANIFEST_FILE, RUN_MANIFEST_SCHEMA, error=RunError, what="manifest")
    model_hash = sha256_file(path / MODEL_FILE)
    if info.get("model_sha256") not in (None, model_hash):
        raise RunError(f"{path / MODEL_FILE}: checksum differs from run.json (file changed or corrupted)")
    return Run(
        path=path, config=config, decoder=decoder, latents=latents.to(device), rotations=rotations.to(device),
        names=names, frames=frames, manifest=manifest, model_hash=model_hash, version=tool_version_of(info),
        info=info,
    )


# -- fitted codes (``cellinr fit`` output) ------------------------------------------------------------
#: The record of a fit folder (codes of new sequences for a run's frozen network); written last.
FIT_FILE = "fit.json"
FIT_FORMAT = "cellinr-fit"


def apply_fit(run: Run, fit_dir: str | os.PathLike) -> Run:
    """The run with its learned codes replaced by the codes that ``cellinr fit`` found for new sequences.

    ``fit_dir`` holds ``fit.json`` (names, frame counts, the run's model hash) and
    ``latents.safetensors`` ("latents" (N, L), "rotations" (N, 3, 3), and "scales" (N,) from fits
    that scaled cells), as a run folder does. The result generates, reconstructs and interpolates the
    fitted sequences with the run's network (at their fitted scales).

    Raises
    ------
    RunError : the folder is not a complete fit, or it was fitted with another network.
    """
    import dataclasses

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    fit_dir = Path(fit_dir)
    try:
        record = json.loads((fit_dir / FIT_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{fit_dir}: not a complete fit folder (cannot read {FIT_FILE}: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != FIT_FORMAT:
        raise RunError(f"{fit_dir / FIT_FILE}: not a {FIT_FORMAT} record")
    if record.get("model_hash") and run.model_hash and record["model_hash"] != run.model_hash:
        raise RunError(f"{fit_dir}: fitted with another network (model sha256 {record['model_hash'][:12]}, the run's "
                       f"is {run.model_hash[:12]}); use the run it was fitted with ({record.get('run')})")
    try:
        tensors = load_file(str(fit_dir / LATENTS_FILE), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{fit_dir / LATENTS_FILE}: unreadable ({exc})") from None
    names, frames = list(record.get("names", [])), [int(f) for f in record.get("frames", [])]
    latents, rotations = tensors.get("latents"), tensors.get("rotations")
    if (latents is None or rotations is None or latents.shape != (len(names), run.config.model.latent_dim)
            or rotations.shape != (len(names), 3, 3) or len(frames) != len(names)):
        raise RunError(f"{fit_dir}: inconsistent fit ({len(names)} names, {len(frames)} frame counts, latents "
                       f"{None if latents is None else tuple(latents.shape)})")
    scales = tensors.get("scales")
    if scales is not None:
        from cellinr._util.schema import finite_array

        finite_array(scales, f"{fit_dir / LATENTS_FILE}: tensor 'scales'", error=RunError)
        if scales.shape != (len(names),) or bool((scales <= 0).any()):
            raise RunError(f"{fit_dir / LATENTS_FILE}: tensor 'scales' must hold {len(names)} positive values")
    device = run.latents.device
    return dataclasses.replace(run, latents=latents.to(device), rotations=rotations.to(device), names=names,
                               frames=frames, info={**{k: v for k, v in run.info.items() if k != "augment"},
                                                    "fit": str(fit_dir.resolve())},
                               scales=None if scales is None else [float(v) for v in scales])
