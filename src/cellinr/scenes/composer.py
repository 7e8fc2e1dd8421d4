"""A scene: many generated cells in one field of view, composed frame by frame.

Each cell has its own model (round robin over ``models``), latent code, Haar-random rotation, time
offset, brightness and position (from ``sequence_rng(seed, i)`` and :func:`brightness_draw`, so cell i depends only on the
seed and i). Its shape at frame f is the model's field at time ``t``, which starts at ``t0`` and moves on
by ``dt`` a frame (by ``pinch_speed * dt`` while the cell is pinched, a non-convex component before
a division, so mitosis can be as short a part of the cycle as in real cells), evaluated on the cell's
own box at the scene's voxel size: a box of D voxels covers the training cube
when ``D = (training_size - 1) * training_voxel / scene_voxel + 1``. ``dt = 2 / (cycle_frames - 1)``:
a cell lives through the whole training sequence in ``cycle_frames`` scene frames, and the offsets
``t0`` spread the cells over its phases. In a 2D scene (Z == 1) each cell is its 3D mask projected
along Z (sampled ``PROJECTION_Z_STEP`` times more coarsely along Z, since only the projection is kept).

Frame by frame: every cell moves (drift + random walk, or the motion its model learned:
:mod:`cellinr.scenes.motion`; with ``spacing``, neighbours closer than it also drift apart) and, when it is
in or near the field of view, ages by one frame (cells far outside are dormant: they only move). Pairs
that would overlap are pushed apart along the line between their centroids; a cell that still
overlaps is held back: it keeps its previous position and shape for this frame (its clock pauses, as
in contact inhibition). The previous frame had no overlap, so holding back always ends with none:
touching is allowed, overlap never. Only the current frame is in memory, whatever the number of frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from cellinr.errors import ParameterError
from cellinr.scenes.lineage import CellLineage, NodeCounter, TrackBook, clean_mask
from cellinr.scenes.motion import LearnedMotion, MotionParams, steps
from cellinr.scenes.quality import NON_CONVEX, solidities
from cellinr.scenes.placement import (
    PUSH_ROUNDS,
    Body,
    Field,
    Occupancy,
    Placer,
    check_density,
    crop_mask,
    push_apart,
    spacing_steps,
    z_range,
)

log = logging.getLogger(__name__)

#: Latent sampler of the scene's cells (a learned code plus noise: always a plausible cell).
DEFAULT_LATENT = "perturb"
#: Random draws of a cell's code before giving up when its mask stays empty at its first frame.
REDRAWS = 10
#: In a 2D scene the box is sampled this much more coarsely along Z (only its projection is kept).
PROJECTION_Z_STEP = 2
#: RNG stream tags under the scene seed: cells use ``sequence_rng(seed, i)``; these are per frame.
_PLACE, _MOTION, _RENDER, _BRIGHTNESS = 1, 2, 3, 4
#: Golden-ratio step of the cells' brightness ranks (a low-discrepancy sequence).
_GOLDEN = 0.6180339887498949


def brightness_draw(seed: int, index: int) -> float:
    """Cell ``index``'s brightness draw z ~ N(0, 1), stratified over the cells of a scene.

    ``z = Phi^-1(frac(u0 + index / golden ratio))`` with ``u0`` fixed by the seed: any run of
    consecutive cells covers the distribution evenly, so a scene of a few dozen cells has the
    brightness distribution it was given rather than a sample of it (independent draws left a third of
    the cells of a 60-cell scene in the dimmest fifth of the distribution). Depends only on the seed and
    the index.
    """
    from scipy.special import ndtri

    u0 = float(np.random.default_rng([seed, _BRIGHTNESS]).random())
    u = (u0 + index * _GOLDEN) % 1.0
    return float(ndtri(min(max(u, 1e-6), 1 - 1e-6)))


@dataclass
class SceneSpec:
    """What a scene is made of (every field enters the scene's identity hash)."""

    models: list[str]
    """Bundled model names or run folders; cells take them in turn."""
    dims: tuple[int, int, int]
    """Field of view (Z, Y, X) voxels; Z == 1 gives a 2D+t scene of projected cells."""
    frames: int
    cells: int | None = None
    """Cells in the field of view at frame 0 (or give ``density``)."""
    density: float | None = None
    """Fraction of the field of view covered by cells at frame 0 (area in 2D, volume in 3D)."""
    voxel_size: tuple[float, float, float] | None = None
    """Scene voxel (Z, Y, X) microns; default: the largest training voxel of the models."""
    seed: int = 0
    motion: MotionParams = field(default_factory=MotionParams)
    cycle_frames: int | None = None
    """Scene frames per training sequence; default ``2 * frames - 1`` (a cell shows half its life)."""
    latent: str = DEFAULT_LATENT
    sigma: float | None = None
    method: str = "fast"
    clearance: float = 0.0
    """Voxels of background kept between any two cells, to about half a voxel (0: touching allowed);
    rounded up to even."""
    start_undivided: bool = False
    """Draw each cell's starting phase among the phases where it is still one cell (models that divide):
    daughters then appear only through divisions seen in the scene, instead of a population where
    every cell past its model's division sits beside its sister for the whole scene."""
    spacing: float = 0.0
    """Voxels of background that neighbours prefer between them: closer ones drift apart a little
    every frame, as nuclei that their cytoplasm keeps apart (0: off; a soft preference, where
    ``clearance`` is a hard limit)."""
    pinch_speed: float | Sequence[float] = 1.0
    """How many times faster than the rest of its life a cell runs through its pinched phases (a
    component of solidity below :data:`cellinr.scenes.quality.NON_CONVEX`, the constriction before a
    division): real mitosis takes a small part of a cell cycle, a learned dividing sequence often a
    large one. With K > 1, codes whose sequence ends in a pinch are redrawn (the cell would stay pinched
    once its clock got there). One value, or one per model (1: the model's own time; meant for models
    that divide, since cells of other models can be non-convex all their life)."""

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            self.models = [self.models]
        self.models = [str(m) for m in self.models]
        if not self.models:
            raise ParameterError("--model: give at least one model")
        dims = tuple(int(d) for d in self.dims)
        if len(dims) != 3 or min(dims) < 1:
            raise ParameterError(f"--dims {' '.join(map(str, self.dims))}: need three positive integers Z Y X")
        if min(dims[1:]) < 8:
            raise ParameterError(f"--dims {' '.join(map(str, dims))}: Y and X need at least 8 voxels")
        self.dims = dims
        if int(self.frames) < 1:
            raise ParameterError(f"--frames {self.frames}: must be positive")
        self.frames = int(self.frames)
        self.density = check_density(self.density)
        if (self.cells is None) == (self.density is None):
            raise ParameterError("give either --cells N or --density D (exactly one)")
        if self.cells is not None:
            if int(self.cells) < 1:
                raise ParameterError(f"--cells {self.cells}: must be positive")
            self.cells = int(self.cells)
        if self.voxel_size is not None:
            v = np.asarray(self.voxel_size, float).ravel()
            if v.size not in (1, 3):
                raise ParameterError(f"--voxel-size {self.voxel_size}: give one value or three (Z Y X)")
            v = tuple(float(x) for x in np.broadcast_to(v, (3,)))
            if not all(np.isfinite(v)) or min(v) <= 0:
                raise ParameterError(f"--voxel-size {self.voxel_size}: must be positive microns (1 or 3 values)")
            self.voxel_size = v
        clearance = float(self.clearance)
        if not np.isfinite(clearance) or clearance < 0:
            raise ParameterError(f"--clearance {self.clearance}: must be a non-negative number of voxels")
        self.clearance = clearance
        spacing = float(self.spacing)
        if not np.isfinite(spacing) or spacing < 0:
            raise ParameterError(f"--spacing {self.spacing}: must be a non-negative number of voxels")
        self.spacing = spacing
        self.start_undivided = bool(self.start_undivided)
        speeds = np.asarray(self.pinch_speed, float).ravel()
        if speeds.size not in (1, len(self.models)) or not np.all(np.isfinite(speeds)) or speeds.min() < 1:
            raise ParameterError(f"--pinch-speed {self.pinch_speed}: give one value >= 1, or one per model "
                                 f"({len(self.models)})")
        self.pinch_speed = float(speeds[0]) if speeds.size == 1 else [float(v) for v in speeds]
        if self.cycle_frames is not None and int(self.cycle_frames) < 2:
            raise ParameterError(f"--cycle-frames {self.cycle_frames}: must be at least 2")
        if isinstance(self.motion, dict):
            self.motion = MotionParams(**self.motion)
        from cellinr.generation.samplers import check_sampler, check_sigma

        check_sampler(self.latent)
        self.sigma = check_sigma(self.sigma)

    @property
    def two_d(self) -> bool:
        return self.dims[0] == 1

    @property
    def cycle(self) -> int:
        return int(self.cycle_frames) if self.cycle_frames is not None else max(2, 2 * self.frames - 1)

    def to_dict(self) -> dict:
        return {"models": list(self.models), "dims": list(self.dims), "frames": self.frames, "cells": self.cells,
                "density": self.density, "voxel_size": None if self.voxel_size is None else list(self.voxel_size),
                "seed": self.seed, "motion": self.motion.to_dict(), "cycle_frames": self.cycle_frames,
                "latent": self.latent, "sigma": self.sigma, "method": self.method, "clearance": self.clearance,
                "spacing": self.spacing, "start_undivided": self.start_undivided,
                **({"pinch_speed": self.pinch_speed} if self.pinch_speed != 1.0 else {})}

    def speed_of(self, model: int) -> float:
        """Pinch speed of the cells of model ``model`` (index into :attr:`models`)."""
        return float(self.pinch_speed if np.isscalar(self.pinch_speed) else self.pinch_speed[model])

    def digest(self, extra: dict | None = None) -> str:
        """Hash of the spec (and ``extra``, e.g. the render parameters): a scene's identity on disk."""
        text = json.dumps({"spec": self.to_dict(), "extra": extra or {}}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Model:
    name: str
    run: object
    device: object
    box: tuple[int, int, int]
    """Box (Z, Y, X) voxels on which the field is evaluated (3D, before any projection)."""


@dataclass
class _Shape:
    """A cell's cleaned mask at one age: components (labels 1..n) cropped at ``offset`` in the box."""

    comps: np.ndarray
    offset: np.ndarray
    n: int
    solidity: float | None = None
    """Lowest solidity of the components (computed when first asked)."""

    def pinched(self) -> bool:
        """Whether a component is non-convex: in a cell that divides, one constricting before its split."""
        if self.n == 0:
            return False
        if self.solidity is None:
            self.solidity = min(solidities(self.comps))
        return self.solidity < NON_CONVEX


@dataclass
class Cell:
    """One cell of the scene (its record regenerates it: model, code, rotation, time offset)."""

    index: int
    model: int
    latent: np.ndarray
    rotation: np.ndarray
    t0: float
    brightness: float
    """Brightness draw z ~ N(0, 1) (:func:`brightness_draw`): the renderer makes it
    ``foreground * exp(cell_cv * z)`` or maps it through a brightness distribution."""
    sdf: object = None
    age: int = 0
    ahead: float = 0.0
    """Model time gained by running through pinches faster (``pinch_speed``): the current shape's time
    is ``t0 + age * dt + ahead``."""
    shape: _Shape | None = None
    body: Body | None = None
    pending: tuple[float, _Shape] | None = None
    """The shape last evaluated for a frame the cell was held back from (model time, shape)."""
    last_pos: np.ndarray | None = None
    lineage: CellLineage = field(default_factory=CellLineage)

    def record(self, models: list[_Model]) -> dict:
        return {"index": self.index, "model": models[self.model].name, "latent": self.latent.tolist(),
                "rotation": np.asarray(self.rotation).tolist(), "t0": self.t0, "brightness": self.brightness}


@dataclass
class SceneFrame:
    """One composed frame.

    Attributes
    ----------
    index : frame number.
    labels : (Z, Y, X) uint16 ndarray, CTC track labels of the field of view (Z == 1 in 2D).
    brightness : (L + 1,) float ndarray, each label's cell brightness draw z ~ N(0, 1) (index = label); the
        renderer's brightness is ``foreground * exp(cell_cv * z)``.
    cells : list of (cell index, corner, mask): each cell's mask (bool, cropped) and the field-of-view
        voxel (Z, Y, X) of its first voxel (may lie outside the field), for checks.
    held : number of cells held back this frame to avoid overlap.
    """

    index: int
    labels: np.ndarray
    brightness: np.ndarray
    cells: list
    held: int


def default_voxel_size(runs: Sequence[object]) -> tuple[float, float, float] | None:
    """The largest training voxel among the models (isotropic), or None when none records one."""
    sizes = [max(r.voxel_size_um) for r in runs if r.voxel_size_um is not None]
    return (max(sizes),) * 3 if sizes else None


def box_dims(run, voxel_size: tuple[float, float, float] | None, *, two_d: bool) -> tuple[int, int, int]:
    """Box (Z, Y, X) voxels covering ``run``'s training cube at ``voxel_size`` (isotropic Y in 2D)."""
    size = run.training_size
    if not size:
        raise ParameterError(f"{run.path}: the run does not record its training size")
    train = run.voxel_size_um
    if voxel_size is None or train is None:
        if voxel_size is not None:
            raise ParameterError(f"{run.path}: the model does not record its voxel size; omit --voxel-size")
        return ((size - 1) // PROJECTION_Z_STEP + 1 if two_d else size, size, size)
    v = (voxel_size[1] * PROJECTION_Z_STEP,) + tuple(voxel_size[1:]) if two_d else tuple(voxel_size)
    return tuple(int(round((size - 1) * u / s)) + 1 for u, s in zip(train, v))


class Scene:
    """The state of a scene being composed; iterate :meth:`frames` once."""

    def __init__(self, spec: SceneSpec, *, device: str = "cpu"):
        from cellinr.generation.frames import EvalOptions, load_for_evaluation

        self.spec = spec
        loaded = [load_for_evaluation(m, device) for m in spec.models]
        self.voxel_size = spec.voxel_size or default_voxel_size([r for r, _ in loaded])
        self.models = [_Model(m, r, d, box_dims(r, self.voxel_size, two_d=spec.two_d))
                       for m, (r, d) in zip(spec.models, loaded)]
        for m in self.models:
            if max(m.box) > 1024:
                raise ParameterError(f"--voxel-size {self.voxel_size}: model {m.name}'s cells need a "
                                     f"{'x'.join(map(str, m.box))} box; use a larger voxel size")
        self.opts = EvalOptions(method=spec.method)
        margin = max(max(m.box[1:]) for m in self.models) + 2
        self.field = Field(spec.dims, margin)
        self.dt = 2.0 / (spec.cycle - 1)
        self.motions = None  # per model, with --motion model
        if spec.motion.source == "model":
            if self.voxel_size is None:
                raise ParameterError("--motion model: the models record no voxel size; give --voxel-size")
            self.motions = [LearnedMotion.of(m.run, m.name, self.voxel_size, (m.run.max_frames - 1) / (spec.cycle - 1))
                            for m in self.models]
        self.cells: list[Cell] = []
        self.counter = NodeCounter()
        self.book = TrackBook(self.counter)
        self.occupancy = Occupancy(self.field)
        self.evaluations = 0
        self.field_seconds = 0.0

    # -- cells --------------------------------------------------------------------------------
    def _next_ahead(self, cell: Cell) -> float:
        """``ahead`` one frame on from the cell's current shape: faster while it pinches."""
        speed = self.spec.speed_of(cell.model)
        if speed > 1 and cell.shape is not None and cell.shape.pinched():
            # every pinch, also one whose division would come after the sequence: all are mitoses
            return cell.ahead + (speed - 1.0) * self.dt
        return cell.ahead

    def _time(self, cell: Cell, age: int, ahead: float) -> float:
        return float(np.clip(cell.t0 + age * self.dt + ahead, -1.0, 1.0))

    def _shape(self, cell: Cell, t: float) -> _Shape:
        from cellinr.generation.frames import evaluate_frame

        m = self.models[cell.model]
        start = time.perf_counter()
        sdf = evaluate_frame(cell.sdf, m.box, t, m.run.sdf_unit, self.opts, m.device).sdf
        self.field_seconds += time.perf_counter() - start
        self.evaluations += 1
        mask = sdf <= 0
        if self.spec.two_d:
            mask = mask.any(axis=0, keepdims=True)
        comps, n = clean_mask(mask)
        crop, offset = crop_mask(comps > 0)
        sl = tuple(slice(int(o), int(o) + s) for o, s in zip(offset, crop.shape))
        return _Shape(np.ascontiguousarray(comps[sl]) if n else np.zeros((1, 1, 1), np.int32), offset, n)

    def _half(self, cell: Cell) -> np.ndarray:
        box = self.models[cell.model].box
        box = (1, *box[1:]) if self.spec.two_d else box
        return (np.asarray(box, np.int64) - 1) // 2

    def _body(self, cell: Cell, shape: _Shape, pos: np.ndarray) -> Body | None:
        if shape.n == 0:
            return None
        # each body claims half the clearance around its mask
        return Body(shape.comps > 0, shape.offset, self._half(cell), np.asarray(pos, np.float64),
                    int(np.ceil(self.spec.clearance / 2)))

    def _new_cell(self, index: int) -> Cell:
        from cellinr.generation.frames import sequence_field
        from cellinr.generation.samplers import (
            random_rotation,
            sample_latents,
            sequence_rng,
        )

        spec = self.spec
        rng, torch_seed = sequence_rng(spec.seed, index)
        model = index % len(self.models)
        run = self.models[model].run
        t_hi = max(-1.0, 1.0 - self.dt * (spec.frames - 1))
        fallback = None
        for _ in range(REDRAWS):
            latent = sample_latents(spec.latent, 1, codes=run.codes, sigma=spec.sigma, rng=rng)[0][0]
            rotation = random_rotation(torch_seed)
            torch_seed = int(rng.integers(2**62))
            t0 = float(rng.uniform(-1.0, t_hi)) if t_hi > -1.0 else -1.0
            cell = Cell(index, model, latent, rotation, t0, brightness_draw(spec.seed, index))
            cell.sdf = sequence_field(run, latent, rotation)
            cell.shape = self._shape(cell, self._time(cell, 0, 0.0))
            speed = spec.speed_of(model)
            # a pinch run through K times faster is found at a start K times less often
            if speed > 1 and cell.shape.pinched() and rng.random() >= 1.0 / speed:
                fallback = fallback or cell
                continue
            if not cell.shape.n or (spec.start_undivided and cell.shape.n > 1):
                fallback = cell if cell.shape.n else fallback
                continue
            # a sequence that ends in a pinch would leave the cell pinched once its faster clock got
            # there (checked last: it costs one more evaluation)
            if speed > 1 and self._shape(cell, 1.0).pinched():
                fallback = fallback or cell
                continue
            return cell
        if fallback is not None:
            log.debug("cell %d: %d draws were all divided or pinched; kept one", index, REDRAWS)
            return fallback
        raise ParameterError(f"model {self.models[model].name}: {REDRAWS} drawn cells were empty at their first "
                             "frame; try another --latent sampler or --sigma")

    # -- frames -------------------------------------------------------------------------------
    def _initial(self) -> None:
        """Draw and place the frame-0 cells, one by one (a field that is too small fails early)."""
        spec, fld = self.spec, self.field
        fov = fld.fov_size
        ring = int(np.prod(fld.shape)) - fov
        placer = Placer(fld, np.random.default_rng([spec.seed, _PLACE]))
        cells: list[Cell] = []
        fov_bodies: list[Body] = []
        wanted = spec.cells if spec.cells is not None else f"--density {spec.density}:"

        def add(inside: bool) -> float:
            cell = self._new_cell(len(cells) + self._left_out)
            body = self._body(cell, cell.shape, np.zeros(3))
            if placer.place(body, inside):
                cell.body = body
                cell.last_pos = body.pos
                cells.append(cell)
                if inside:
                    fov_bodies.append(body)
                return float(body.size)
            if inside:
                raise placer.too_dense(wanted, fov_bodies + [body])
            self._left_out += 1  # a margin cell without room is left out
            return 0.0

        self._left_out = 0
        if spec.cells is not None:
            for _ in range(spec.cells):
                add(True)
            for _ in range(int(round(spec.cells * ring / fov))):
                add(False)
        else:
            covered = 0.0
            while covered < spec.density * fov:
                covered += add(True)
            covered, tries = 0.0, 0
            while covered < spec.density * ring and tries < 10 * max(1, len(cells)) + 100:
                covered += add(False)
                tries += 1
        self.cells = cells
        log.info("scene: %d cells in the field of view, %d in the margin (%d left out)", len(fov_bodies),
                 len(cells) - len(fov_bodies), self._left_out)

    def _active(self, cell: Cell, pos: np.ndarray) -> bool:
        """Whether a cell at ``pos`` can touch the field of view (box centre within half a box of it): it ages."""
        reach = np.asarray(self.models[cell.model].box[1:], float) / 2 + 2
        m = self.field.margin
        _, y, x = self.spec.dims
        return bool(m - reach[0] <= pos[1] <= m + y + reach[0] and m - reach[1] <= pos[2] <= m + x + reach[1])

    def _advance(self, f: int) -> int:
        """Move and age every cell to frame ``f`` without overlap; returns how many were held back."""
        spec, fld = self.spec, self.field
        cells = self.cells
        prev = [(c.body, c.shape, c.age, c.ahead) for c in cells]
        rng = np.random.default_rng([spec.seed, _MOTION, f])
        if self.motions is None:
            d = steps(spec.motion, len(cells), rng, two_d=spec.two_d)
        else:  # each cell moves as its model's training cells did, turned with its rotation
            noise = rng.standard_normal((len(cells), 3))
            d = np.array([self.motions[c.model].step(noise[k], c.rotation) for k, c in enumerate(cells)],
                         dtype=np.float64).reshape(len(cells), 3)
            if spec.two_d:
                d[:, 0] = 0.0
        if spec.spacing > 0:
            d = d + spacing_steps(fld, [c.body for c in cells], spec.spacing)
        for k, c in enumerate(cells):
            pos = fld.wrap((c.body.pos if c.body is not None else c.last_pos) + d[k])
            shape, age, ahead = c.shape, c.age, c.ahead
            if self._active(c, pos):
                age, ahead = c.age + 1, self._next_ahead(c)
                t = self._time(c, age, ahead)
                if c.pending is not None and c.pending[0] == t:
                    shape = c.pending[1]
                else:
                    shape = self._shape(c, t)
                    c.pending = (t, shape)
            c.shape, c.age, c.ahead = shape, age, ahead
            body = self._body(c, shape, pos)
            if body is not None:
                lo, hi = z_range(fld, body)
                body.pos[0] = float(np.clip(body.pos[0], lo, hi))
            c.body = body
            c.last_pos = pos
        bodies = [c.body for c in cells]
        movable = np.ones(len(cells), bool)
        pairs = self.occupancy.conflicts(bodies)
        for _ in range(PUSH_ROUNDS):
            if not pairs:
                break
            push_apart(fld, bodies, pairs, rng, movable)
            pairs = self.occupancy.conflicts(bodies)
        held: set[int] = set()
        while pairs:
            for pair in pairs:
                both_held = all(k in held for k in pair)
                if both_held:
                    # their previous states overlap too (it happens across the wrap-around margin): the
                    # later cell is left out of this frame, so its track ends, and overlap never happens
                    k = max(pair)
                    log.debug("frame %d: cells %s overlap even as they were; cell %d leaves", f, pair, k)
                    cells[k].body = bodies[k] = None
                    continue
                for k in pair:
                    if k not in held:
                        held.add(k)
                        c = cells[k]
                        c.body, c.shape, c.age, c.ahead = prev[k]
                        if c.body is not None:
                            c.last_pos = c.body.pos
                        bodies[k] = c.body
            pairs = self.occupancy.conflicts(bodies)
        return len(held)

    def _compose(self, f: int, held: int) -> SceneFrame:
        spec, fld = self.spec, self.field
        z, y, x = spec.dims
        m = fld.margin
        _, ye, xe = fld.shape
        labels = np.zeros(spec.dims, np.uint16)
        visible: list[int] = []
        parts = []
        diag = []
        for c in self.cells:
            if c.body is None:
                c.lineage.update(np.zeros((1, 1, 1), np.int32), np.zeros(3, np.int64), self.counter)
                continue
            nodes = c.lineage.update(c.shape.comps, c.shape.offset, self.counter)
            corner = c.body.corner()
            corner[1] = corner[1] % ye - m
            corner[2] = corner[2] % xe - m
            diag.append((c.index, corner.copy(), c.body.mask))
            lo = np.maximum(corner, 0)
            hi = np.minimum(corner + c.shape.comps.shape, spec.dims)
            if np.any(hi <= lo):
                continue
            sub = c.shape.comps[tuple(slice(int(lo[i] - corner[i]), int(hi[i] - corner[i])) for i in range(3))]
            present = np.unique(sub)
            present = present[present > 0]
            for k in present.tolist():
                visible.append(nodes[k - 1])
            parts.append((c, nodes, lo, hi, sub))
        label_of = self.book.frame(f, visible)
        brightness = np.zeros(self.book.next_label, np.float64)
        for c, nodes, lo, hi, sub in parts:
            lut = np.zeros(len(nodes) + 1, np.uint16)
            for k, node in enumerate(nodes, 1):
                lut[k] = label_of.get(node, 0)
                if lut[k]:
                    brightness[lut[k]] = c.brightness
            region = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            inside = sub > 0
            region[inside] = lut[sub[inside]]
        return SceneFrame(f, labels, brightness, diag, held)

    def frames(self) -> Iterator[SceneFrame]:
        """The scene's frames, one at a time (the state moves on as they are consumed)."""
        self._initial()
        yield self._compose(0, 0)
        for f in range(1, self.spec.frames):
            held = self._advance(f)
            yield self._compose(f, held)

    def records(self) -> list[dict]:
        return [c.record(self.models) for c in self.cells]

    def tracks(self):
        return self.book.track_list()
