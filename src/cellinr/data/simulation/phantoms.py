"""Procedural 3D+t cell-shape phantoms with known ground truth (``cellinr simulate``).

Three behaviours, after the cell lines of Wiesner et al. (MICCAI 2022, MedIA 2024):

``deforming``  (like *Platynereis dumerilii* embryo cells)
    One cell that grows (volume x1.3-1.8 over the window) and changes shape quickly: a sphere whose
    log-radius is modulated by low-order real spherical harmonics (degrees 2-4) with coefficients
    that oscillate smoothly in time, plus occasional blebs (balls that bulge out and retract),
    joined by a smooth union. The shape is star-shaped around its centre, so it stays one component
    without holes.
``dividing``  (like *C. elegans* embryo cells)
    A cell grows, elongates, forms a cleavage furrow and splits into two daughters (1 -> 2
    components) at a random time; the daughters round up and move apart a little. Some sequences
    divide twice (a daughter divides again, perpendicular to the first axis), some not at all in the
    window. The two lobes of a dividing cell are balls whose radii are solved so that their union
    keeps the cell's volume (the smooth-union fillet adds a few percent at most).
``filopodial``  (like A549 cells)
    A flattened, slowly deforming ellipsoidal body lying roughly in the XY plane (a cell on a
    coverslip; random in-plane angle, tilt up to ~15 degrees) with 5-11 thin protrusions (capsule
    chains along persistent random walks, mostly in the body's plane) that nucleate, grow, branch
    and sometimes retract; joined to the body by a smooth fillet. Protrusion radius is 1.0-1.3
    voxels of a 64^3 grid (a fixed physical radius, so proportionally more voxels at larger sizes).

Every shape is a continuous signed-distance-like field f(x, y, z, t) (negative inside) built from
primitives (:mod:`cellinr.data.simulation.primitives`); masks are ``f <= 0`` on the voxel centres, so any
``size`` gives the same shape at another resolution and any number of frames samples the same
continuous motion. The field is an exact Euclidean distance for balls and capsules and a
distance-like bound for the deformed bodies (exact zero level set; gradient norm within about 20 %
of 1 near the surface).

Coordinates and units
    The cube [-1, 1]^3 (project convention: voxel i of S has coordinate -1 + 2 i / (S - 1)) spans
    a fixed physical size per kind (:data:`CUBE_UM`), so ``size`` changes only the voxel size:
    ``voxel_size_um = CUBE_UM[kind] / (size - 1)``. Sequence time t runs over [0, 1]; frame k of T
    is at t = k / (T - 1) (t = 0 when T == 1); the network time of the project is ``2 t - 1``.

Determinism
    Sequence i of kind K with seed s draws its parameters from
    ``numpy.random.SeedSequence(s, spawn_key=(crc32(K), i))``, so it does not depend on how many
    sequences are made, nor on ``size`` or ``frames``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellinr._util.jsonsafe import file_header, json_safe
from cellinr.data.simulation.deforming import _Deforming
from cellinr.data.simulation.dividing import _Dividing
from cellinr.data.simulation.filopodial import _Filopodial
from cellinr.data.simulation.primitives import GridDomain, PointDomain
from cellinr.data.simulation.shapes import CUBE_UM, KINDS, _Model, _unit
from cellinr.errors import ParameterError

logger = logging.getLogger(__name__)


_MODELS = {"deforming": _Deforming, "dividing": _Dividing, "filopodial": _Filopodial}


# ===================================================================================================
# public API


class _ToVoxels:
    """Model coordinates -> voxel indices (z, y, x) of a grid of ``size``."""

    def __init__(self, model: _Model, size: int):
        self.model, self.half = model, (size - 1) / 2.0

    def __call__(self, q) -> list[float]:
        p = self.model.scale * np.asarray(q, dtype=float) + self.model.offset
        v = (p + 1.0) * self.half
        return [round(float(v[2]), 3), round(float(v[1]), 3), round(float(v[0]), 3)]

    def length(self, d: float) -> float:
        return round(float(d) * self.model.scale * self.half, 3)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ParameterError(f"kind: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    return kind


def _check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sequence_rng(kind: str, index: int, seed: int) -> np.random.Generator:
    """The generator of sequence ``index``: independent of the number of sequences, size and frames."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(kind.encode()), int(index)))
    return np.random.default_rng(ss)


@dataclass
class SimulatedSequence:
    """One simulated sequence: voxel masks, ground truth and the continuous field.

    Attributes
    ----------
    kind, index, seed : what was simulated
    frames, size : sampling of ``masks``
    masks : (T, Z, Y, X) uint8 ndarray
        1 inside the cell (field <= 0 at the voxel centre).
    truth : dict
        JSON-serialisable ground truth (see :func:`simulate`).
    spacing : (z, y, x) voxel size in microns
    """

    kind: str
    index: int
    seed: int
    frames: int
    size: int
    masks: np.ndarray
    truth: dict
    spacing: tuple[float, float, float]
    _model: _Model = field(repr=False)

    @property
    def times(self) -> np.ndarray:
        """(T,) sequence times of the frames in [0, 1]."""
        return frame_times(self.frames)

    def sdf(self, t: float, points, *, part: str = "cell") -> np.ndarray:
        """The continuous field at sequence time ``t`` in [0, 1] (any t, not only frame times).

        Parameters
        ----------
        points : (N, 3) array, columns (x, y, z) in the normalised cube [-1, 1]
        part : "cell" (everything) or "body" (the cell body without protrusions and blebs)

        Returns
        -------
        (N,) float64 ndarray: signed distance in normalised units (negative inside);
        multiply by ``(size - 1) / 2`` for voxels of a grid of ``size``. Exact for balls and capsules,
        a distance-like bound with the exact zero level set for deformed bodies.
        """
        m = self._model
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ParameterError(f"points: expected an (N, 3) array, got shape {pts.shape}")
        dom = PointDomain(pts, shift=m.offset, scale=m.scale)
        return m.field(float(t), dom, part=_check_part(part), margin=None, cap=np.inf) * m.scale

    def grid_sdf(
        self, t: float, size: int | None = None, *, part: str = "cell", clip: float | None = None
    ) -> np.ndarray:
        """The field on a (size, size, size) voxel grid at time ``t`` in [0, 1], in voxels of that grid.

        ``clip`` (voxels) caps positive values there and lets far primitives be skipped (much faster);
        values below ``clip`` are unchanged. None evaluates everything everywhere.
        """
        return _grid_field(self._model, float(t), size or self.size, part=_check_part(part), clip=clip)

    def mask(self, t: float, size: int | None = None, *, part: str = "cell") -> np.ndarray:
        """(S, S, S) bool mask (field <= 0) at any time t in [0, 1] and grid size."""
        return self.grid_sdf(t, size, part=part, clip=1.0) <= 0


def _check_part(part: str) -> str:
    if part not in ("cell", "body"):
        raise ParameterError(f"part: expected 'cell' or 'body', got {part!r}")
    return part


def frame_times(frames: int) -> np.ndarray:
    """Sequence times in [0, 1] of ``frames`` equally spaced frames (0 for a single frame)."""
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def _grid_field(model: _Model, t: float, size: int, *, part: str, clip: float | None) -> np.ndarray:
    vox = (size - 1) / 2.0  # voxels per normalised unit
    dom = GridDomain(size, shift=model.offset, scale=model.scale)
    if clip is None:
        f = model.field(t, dom, part=part, margin=None, cap=np.inf)
        return f * np.float32(model.scale * vox)
    # in model units: primitives skipped beyond `margin` change nothing below `cap` (see _Accumulator);
    # 1.5 cap because the deformed bodies' fields may underestimate distances by up to ~25 %
    cap = clip / vox / model.scale
    margin = 1.5 * cap + 3 * _max_blend(model) + 1e-6
    f = model.field(t, dom, part=part, margin=margin, cap=margin)
    f *= np.float32(model.scale * vox)
    np.minimum(f, np.float32(clip), out=f)
    return f


def _max_blend(model: _Model) -> float:
    if isinstance(model, _Filopodial):
        return model.fillet
    if isinstance(model, _Deforming):
        return 0.6 * max([b["size"] for b in model.blebs], default=0.0) * model.radius(1.0)
    return model.k_rel * (3 * model.volume(0, 1.0) / (4 * math.pi)) ** (1 / 3)


def _build_model(kind: str, index: int, seed: int) -> _Model:
    model = _MODELS[kind](sequence_rng(kind, index, seed))
    model.finalize()
    return model


def simulate_sequence(kind: str, index: int, *, frames: int, size: int, seed: int = 0) -> SimulatedSequence:
    """Simulate sequence ``index`` of behaviour ``kind``: masks, ground truth and continuous field.

    Parameters
    ----------
    kind : {"deforming", "dividing", "filopodial"}
    index : sequence number (>= 0); with ``seed`` it fixes the shape, whatever else is simulated
    frames : number of time points T (>= 1), sampling t in [0, 1]
    size : cube edge S in voxels (>= 8); the same shape at any size
    seed : random seed

    Returns
    -------
    SimulatedSequence
        ``masks`` is a (T, S, S, S) uint8 array.
    """
    _check_kind(kind)
    frames = _check_positive("frames", frames)
    size = _check_positive("size", size, minimum=8)
    index = _check_positive("index", index, minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed: must be a non-negative integer, got {seed!r}")
    model = _build_model(kind, index, int(seed))
    times = frame_times(frames)
    masks = np.empty((frames, size, size, size), dtype=np.uint8)
    for k, t in enumerate(times):
        masks[k] = _grid_field(model, float(t), size, part="cell", clip=1.0) <= 0
    spacing = (CUBE_UM[kind] / (size - 1),) * 3
    truth = _ground_truth(model, masks, times, size, int(seed), index, spacing)
    return SimulatedSequence(kind=kind, index=index, seed=int(seed), frames=frames, size=size, masks=masks,
                             truth=truth, spacing=spacing, _model=model)


def _ground_truth(model: _Model, masks, times, size, seed, index, spacing) -> dict:
    from scipy import ndimage

    to_vox = _ToVoxels(model, size)
    voxel_um3 = float(np.prod(spacing))
    per_frame = []
    for k, t in enumerate(times):
        entry = {"frame": k, "time": round(float(t), 6), **model.truth(float(t), to_vox)}
        n_vox = int(masks[k].sum())
        _, n_comp = ndimage.label(masks[k], structure=np.ones((3, 3, 3)))
        entry["volume_voxels"] = n_vox
        entry["volume_um3"] = round(n_vox * voxel_um3, 3)
        entry["components_voxels"] = int(n_comp)
        entry["equivalent_radius_voxels"] = round((3 * n_vox / (4 * math.pi)) ** (1 / 3), 3)
        per_frame.append(entry)
    truth = {
        "kind": model.kind, "index": index, "seed": seed, "frames": len(times), "size": size,
        "axes": "TZYX", "voxel_size_um": list(spacing), "cube_um": CUBE_UM[model.kind],
        "time_convention": "t in [0, 1]; frame k of T at k / (T - 1); network time = 2 t - 1",
        "coordinates": "voxel (z, y, x) indices of this grid; model -> cube [-1, 1]: p = scale * q + offset",
        "scale": model.scale, "offset": model.offset.tolist(),
        "frames_truth": per_frame,
        "parameters": model.params(),
    }
    if isinstance(model, _Dividing):
        divisions = []
        for ev in model.events:
            t_pinch = ev["pinch"]
            frame = _first_frame_at(times, t_pinch)
            divisions.append({
                "time": t_pinch, "frame": frame, "furrow_start": ev["start"], "mother": ev["mother"],
                "daughters": list(ev["daughters"]), "volume_fraction": ev["w1"], "axis_xyz": ev["axis"].tolist(),
                "in_window": bool(0.0 <= t_pinch <= 1.0),
            })
        truth["divisions"] = divisions
    return json_safe(truth, digits=6)


def _first_frame_at(times, t: float) -> int | None:
    """Index of the first frame at or after time t (None when t is beyond the last frame)."""
    idx = np.flatnonzero(times >= t - 1e-12)
    return int(idx[0]) if idx.size else None


# ===================================================================================================
# previews and files


def mip_strip(masks: np.ndarray, *, max_frames: int = 10, min_panel: int = 96) -> np.ndarray:
    """A uint8 preview image: shaded maximum projections of frames side by side.

    Top row: projection along Z (the XY view); bottom row: along Y (the XZ view). Inside the
    silhouette the grey level grows with the thickness, so the shape reads as 3D.

    Parameters
    ----------
    masks : (T, Z, Y, X) array
    """
    masks = np.asarray(masks) > 0
    t = masks.shape[0]
    picks = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    rows = []
    for axis in (1, 2):  # axes of a (Z, Y, X) frame: 0 = Z; after taking a frame: Z is 0, Y is 1
        panels = []
        for k in picks:
            frame = masks[k]
            thick = frame.sum(axis=axis - 1).astype(np.float32)
            peak = max(float(thick.max()), 1.0)
            img = np.where(thick > 0, 70 + 185 * np.sqrt(thick / peak), 0)
            panels.append(np.pad(img, 1, constant_values=40))
        rows.append(np.concatenate(panels, axis=1))
    strip = np.concatenate(rows, axis=0).astype(np.uint8)
    rep = max(1, int(math.ceil(min_panel / masks.shape[-1])))
    return np.repeat(np.repeat(strip, rep, axis=0), rep, axis=1)


def _write_png(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    from cellinr._util.atomic import atomic_path

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")


def simulate(
    out: str | os.PathLike,
    *,
    kind: str,
    sequences: int,
    frames: int,
    size: int,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write simulated sequences of one behaviour to the folder ``out``.

    Per sequence i (files named ``<kind>_<i:03d>``):

    - ``.tif``: (T, Z, Y, X) uint8 mask (1 inside), ImageJ hyperstack with axes "TZYX" and the voxel
      size ``CUBE_UM[kind] / (size - 1)`` microns;
    - ``.json``: ground truth: parameters and seed, per-frame time, volume, number of components
      (model and measured on the voxels), and per kind: division events (time in [0, 1], first
      frame at or after it, mother and daughters), protrusions (length, tip and base in voxel
      (z, y, x) coordinates), blebs;
    - ``.png``: shaded maximum-projection strip over time (XY row over XZ row).

    Plus ``simulation.json`` describing the run. The folder is built aside and moved into place
    at the end, so an interrupted run leaves nothing.

    Raises
    ------
    ParameterError
        Unknown ``kind``; non-positive ``sequences`` / ``frames``; ``size`` < 8.
    OutputExistsError
        ``out`` exists and is not empty, and ``overwrite`` is False.
    """
    from cellinr._util.atomic import atomic_dir, atomic_write_text
    from cellinr._util.progress import tqdm
    from cellinr.io.tiff import write_tiff

    _check_kind(kind)
    sequences = _check_positive("sequences", sequences)
    frames = _check_positive("frames", frames)
    size = _check_positive("size", size, minimum=8)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed: must be a non-negative integer, got {seed!r}")
    out = Path(out)
    from cellinr._util.memory import check_memory
    from cellinr._util.outputs import check_new_output

    check_new_output(out, overwrite=overwrite)
    # one sequence at a time: its (T, S, S, S) uint8 masks plus a few float64 fields of one frame
    check_memory(frames * size**3 + 6 * 8 * size**3, None, f"a sequence of {frames} frames of {size}^3 voxels")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        names = []
        for i in tqdm(range(sequences), desc=f"simulate {kind}", unit="seq", disable=None):
            seq = simulate_sequence(kind, i, frames=frames, size=size, seed=seed)
            name = f"{kind}_{i:03d}"
            write_tiff(tmp / f"{name}.tif", seq.masks, axes="TZYX", spacing=seq.spacing)
            atomic_write_text(tmp / f"{name}.json", json.dumps(seq.truth, indent=1))
            _write_png(tmp / f"{name}.png", mip_strip(seq.masks))
            names.append(name)
        summary = {
            **file_header("cellinr-simulation"), "kind": kind, "sequences": sequences,
            "frames": frames, "size": size, "seed": seed, "axes": "TZYX",
            "voxel_size_um": CUBE_UM[kind] / (size - 1), "cube_um": CUBE_UM[kind], "names": names,
        }
        atomic_write_text(tmp / "simulation.json", json.dumps(summary, indent=1))
    logger.info("wrote %d %s sequences to %s", sequences, kind, out)
    return out


def save_overview(seq: SimulatedSequence, path: str | os.PathLike, *, n_times: int = 5, size: int = 96) -> Path:
    """Save a figure of a sequence: smooth 3D surfaces (marching cubes of the field) over a MIP strip.

    The surfaces come from the continuous field on a ``size``^3 grid, so they show the shape, not
    voxel blocks. Used for the preview images under ``docs/``.
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    from cellinr._util.figures import new_figure, save_png

    times = np.linspace(0.0, 1.0, n_times)
    fields = [seq.grid_sdf(float(t), size, clip=3.0) for t in times]
    inside = np.argwhere(np.any([f <= 0 for f in fields], axis=0))  # (z, y, x) over all times
    centre = (inside.min(axis=0) + inside.max(axis=0)) / 2.0
    half = (inside.max(axis=0) - inside.min(axis=0)).max() / 2.0 + 2
    colour = {"deforming": (0.45, 0.75, 0.45), "dividing": (0.85, 0.6, 0.35)}.get(seq.kind, (0.45, 0.6, 0.9))
    colour = np.array(colour)
    fig = new_figure((2.6 * n_times, 5.4), dpi=110)
    light = _unit([0.4, -0.5, 0.8])
    for j, (t, f) in enumerate(zip(times, fields)):
        verts, faces, normals, _ = marching_cubes(f, level=0.0)
        verts = verts[:, ::-1]  # (z, y, x) -> (x, y, z) for the plot
        n = normals[:, ::-1][faces].mean(axis=1)
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        shade = 0.3 + 0.7 * np.clip(-(n @ light), 0, 1)
        ax = fig.add_subplot(2, n_times, j + 1, projection="3d")
        ax.add_collection3d(Poly3DCollection(verts[faces], facecolors=shade[:, None] * colour[None, :], linewidths=0))
        cx, cy, cz = centre[2], centre[1], centre[0]
        ax.set(xlim=(cx - half, cx + half), ylim=(cy - half, cy + half), zlim=(cz - half, cz + half))
        ax.set_box_aspect((1, 1, 1), zoom=1.35)
        ax.view_init(elev=35, azim=-60)
        ax.set_axis_off()
        ax.set_title(f"t = {t:.2f}", fontsize=10)
        ax2 = fig.add_subplot(2, n_times, n_times + j + 1)
        thick = (f <= 0).sum(axis=0).astype(np.float32)
        ax2.imshow(np.where(thick > 0, 0.25 + 0.75 * np.sqrt(thick / max(thick.max(), 1)), 0), cmap="gray",
                   vmin=0, vmax=1, interpolation="nearest", origin="lower")
        ax2.set_axis_off()
    fig.suptitle(f"cellinr simulate --kind {seq.kind}  (sequence {seq.index}, seed {seq.seed}): "
                 "surfaces (top), shaded maximum projections along Z (bottom)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
