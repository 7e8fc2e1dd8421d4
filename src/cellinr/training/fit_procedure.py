"""Test-time fitting of one sequence: its latent code (and rotation), the network frozen.

The objective is the training loss (:mod:`cellinr.training.loss`) with the network fixed (DeepSDF
auto-decoder inference): ``mean |clamp(f(z, R p, t), -1, 1) - clamp(sdf, -1, 1)| + lambda * ||z||``
with the run's ``train.code_reg`` as lambda (training's regulariser ``lambda * mean ||z||`` for one
code). :func:`cellinr.training.fitting.fit` is the front-end (files, Dice, the run-like record).

Procedure (:func:`fit_sequence`), all on points drawn once into a small pool:

1. Point pool (:func:`point_pool`): the frames are read one at a time; each contributes
   ``pool_per_frame`` voxels drawn with the run's sampling scheme
   (:class:`cellinr.training.sampling.NearFarIndex`). The same pass accumulates the second moments
   of the inside voxels (principal frame and volume, for rotations). Memory: the pool only
   (T x 16,384 x 20 B: 10 MB for 30 frames), never the whole sequence.
2. Starts: the candidate codes are the learned codes and their mean. Without rotations every
   candidate is scored by the loss on ``probe_points`` pool points. With rotations the rotation
   hypotheses are ``E_code S E_data^T`` over the principal-axes hypotheses of
   :mod:`cellinr.geometry.orientation` (4 sign flips; spins when two axes are degenerate; an SO(3)
   grid when all three are), E_code being the principal frame of a code's decoded canonical shape
   (:func:`code_frames`, computed once per run). Stage 1 scores every hypothesis on
   ``score_points`` points with the code nearest to the data by a rotation-invariant descriptor
   (:func:`descriptor`); stage 2 pairs the ``rotation_keep`` best rotations with every code.
3. Probe: the ``candidates`` best starts are optimised together for ``probe_steps`` steps; the best
   one (loss on a fixed batch of ``eval_points``) continues. With rotations, starts within ``tie`` of
   the best loss count as equal (a symmetric shape) and the smallest rotation wins.
4. Main optimisation: Adam for ``steps`` steps, the learning rates cosine-annealed from ``lr`` (and
   ``rotation_lr``) to ``lr_end`` times that; the points per step grow geometrically from
   ``points[0]`` to ``points[1]`` (few while the code moves a lot, many for the final detail).

Measured on simulated and real cells (bench/bench_fit.py): the same Dice as 300 steps of 4096 points
from the learned code that fits best in about half the CPU time, and with ``rotations`` the
right orientation also for rotations near 180 degrees, where a start at the identity stays in a
half-turn local minimum.

Only numpy is imported at module level (the CLI reads :class:`FitOptions` for its defaults).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class FitOptions:
    """Parameters of :func:`fit_sequence` (defaults: the recommended procedure)."""

    steps: int = 100
    """Main optimisation steps."""
    points: tuple[int, int] = (2048, 8192)
    """Points per step at the first and the last main step (geometric ramp)."""
    lr: float = 2e-2
    """Adam learning rate of the code at the start (cosine-annealed to ``lr * lr_end``)."""
    lr_end: float = 0.05
    """Final learning rates as a fraction of the initial ones."""
    rotation_lr: float = 1e-2
    """Adam learning rate of the rotation quaternion (same schedule)."""
    pool_per_frame: int = 16384
    """Points drawn once per frame into the pool."""
    candidates: int = 3
    """Starts optimised in the probe phase."""
    probe_points: int = 1024
    """Points per step of the probe phase (and for scoring the starts)."""
    probe_steps: int = 20
    """Steps of the probe phase (0: the best-scoring start continues directly)."""
    eval_points: int = 8192
    """Fixed batch on which the probed starts are compared (and the final loss is reported)."""
    score_points: int = 256
    """With rotations, stage 1: points on which every rotation hypothesis is scored."""
    rotation_keep: int = 8
    """With rotations, stage 2: the best hypotheses of stage 1, each paired with every candidate code."""
    rel_tol: float = 0.08
    """Relative eigenvalue gap below which two principal axes count as degenerate."""
    n_spin: int = 12
    """Spins about the distinct axis tried when two principal axes are degenerate."""
    n_grid: int = 576
    """Rotations of the SO(3) grid tried when all three are (covering radius about 25 degrees)."""
    tie: float = 0.02
    """With rotations: probed starts within this relative loss of the best count as equally good."""
    init: str = "best"
    """``best`` (learned codes and their mean as candidates) or ``mean`` (the mean code only)."""


@dataclass
class Pool:
    """Points (N, 4) (x, y, z, t) and targets (N,) of one sequence, plus its principal frame."""

    xyzt: torch.Tensor
    target: torch.Tensor
    frame: tuple | None
    """(axes, eigenvalues, centroid) of the inside voxels of all frames; None without inside voxels."""
    volume: float
    """Mean inside volume per frame, in coordinate units^3."""
    n_frames: int
    shape: tuple[int, int, int]


def point_pool(frames, n_frames: int, *, per_frame: int = 16384, scheme: str = "reference",
               near_fraction: float = 0.7, near_threshold: float = 0.3, band: float = 0.1, ratio: float = 1.0,
               rng: np.random.Generator | None = None) -> Pool:
    """Draw the fitting points of a sequence, reading its frames once (one in memory at a time).

    Parameters
    ----------
    frames : iterable of (Z, Y, X) normalised SDF frames (``n_frames`` of them)
    per_frame : points drawn per frame (with replacement)
    scheme, near_fraction, near_threshold, band : the sampling scheme
        (:class:`cellinr.training.sampling.NearFarIndex`), applied to the frames in the run's units
    ratio : factor from the frames' SDF units to the run's (see :func:`cellinr.training.fitting.fit`)
    rng : random generator of the draws

    Returns
    -------
    Pool
        ``xyzt`` (T * per_frame, 4) float32, ``target`` (T * per_frame,) float32 clipped to [-1, 1].
    """
    import torch

    from cellinr.geometry import orientation as orient
    from cellinr.geometry.grid import time_coords
    from cellinr.training.sampling import NearFarIndex, index_to_coords

    rng = rng or np.random.default_rng(0)
    times = time_coords(n_frames)
    xs, ys, shapes = [], [], []

    def sampled():
        for t, f in enumerate(frames):
            f = np.asarray(f, np.float32) * np.float32(ratio)
            shapes.append(f.shape)
            idx, val = NearFarIndex(f, scheme=scheme, near_threshold=near_threshold, band=band).draw(
                per_frame, near_fraction, rng)
            xyz = index_to_coords(torch.from_numpy(idx), f.shape)
            xs.append(torch.cat([xyz, torch.full((len(idx), 1), float(times[t]))], 1))
            ys.append(np.clip(val, -1, 1))
            yield f

    try:
        centroid, cov, n_inside = orient.second_moments(sampled())
        frame = orient.frame_from_moments(cov, centroid)
    except orient.NoInsideVoxels:  # nothing to orient
        frame, n_inside = None, 0
    if len(shapes) != n_frames:
        raise ValueError(f"point_pool: got {len(shapes)} frames, expected {n_frames}")
    shape = shapes[0]
    voxel = float(np.prod([2.0 / (n - 1) if n > 1 else 1.0 for n in shape]))
    return Pool(torch.cat(xs), torch.as_tensor(np.concatenate(ys), dtype=torch.float32), frame,
                n_inside / n_frames * voxel, n_frames, tuple(shape))


def code_frames(decoder, codes: torch.Tensor, *, size: int = 24, times=(-1.0, 0.0, 1.0),
                chunk: int = 2**16) -> list:
    """Principal frame and volume of the canonical shape of each code (decoded on a size^3 grid).

    Parameters
    ----------
    decoder : :class:`cellinr.nn.decoder.AutoDecoder`
    codes : (N, L) codes, on the decoder's device

    Returns
    -------
    list of ((axes, eigenvalues, centroid), volume) per code; volume in coordinate units^3 per frame.
    """
    import torch

    from cellinr.geometry import orientation as orient

    c = torch.linspace(-1, 1, size, device=codes.device)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    pts = torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], 1)
    voxel = (2.0 / (size - 1)) ** 3
    out = []
    with torch.no_grad():
        for code in codes:
            field = decoder.field(code)
            inside = []
            for t in times:
                xyzt = torch.cat([pts, torch.full((len(pts), 1), float(t), device=pts.device)], 1)
                v = torch.cat([field(p) for p in torch.split(xyzt, chunk)])
                inside.append(pts[v <= 0].double().cpu().numpy())
            p = np.concatenate(inside)
            if len(p) < 4:
                out.append(((np.eye(3), np.ones(3), np.zeros(3)), 0.0))
                continue
            centre = p.mean(0)
            out.append((orient.frame_from_moments(np.cov((p - centre).T, bias=True), centre),
                        len(p) / len(times) * voxel))
    return out


def descriptor(eigenvalues, volume: float) -> np.ndarray:
    """(4,) rotation-invariant shape descriptor: sqrt of the second-moment eigenvalues, cube root of the volume."""
    return np.concatenate([np.sqrt(np.maximum(np.asarray(eigenvalues, float), 0)), [max(volume, 0.0) ** (1 / 3)]])


def _loss(decoder, codes: torch.Tensor, rots: torch.Tensor | None, xyzt: torch.Tensor, target: torch.Tensor,
          reg: float, log_scales: torch.Tensor | None = None) -> torch.Tensor:
    """(G,) loss per candidate: codes (G, L), rots (G, 3, 3) or None, log-scales (G,) or None, shared
    points (n, 4), targets (n,). A scale s makes the shape s times larger: ``s f(z, R p / s)``."""
    import torch

    g = codes.shape[0]
    pts = xyzt[None].expand(g, *xyzt.shape)
    xyz = pts[..., :3] if rots is None else pts[..., :3] @ rots.transpose(1, 2)
    if log_scales is not None:
        xyz = xyz / log_scales.exp()[:, None, None]
    if rots is not None or log_scales is not None:
        pts = torch.cat([xyz, pts[..., 3:]], -1)
    pred = decoder.forward_frames(codes, pts).float()
    if log_scales is not None:
        pred = pred * log_scales.exp().float()[:, None]
    return (pred.clamp(-1, 1) - target[None]).abs().mean(1) + reg * codes.float().norm(dim=1)


def _batched_loss(decoder, codes, rots, xyzt, target, reg, log_scales=None, batch: int = 256):
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, codes.shape[0], batch):
            part = slice(s, s + batch)
            out.append(_loss(decoder, codes[part], None if rots is None else rots[part], xyzt, target, reg,
                             None if log_scales is None else log_scales[part]))
    return torch.cat(out)


#: Largest factor between a cell's size and the training cells' that ``scale`` makes up for.
MAX_SCALE = 4.0


def size_scale(volume: float, code_volumes) -> float:
    """The scale at which a cell of ``volume`` is fitted: 1 within the learned codes' sizes.

    A cell larger than the largest code's shape or smaller than the smallest is out of reach of the
    codes; it is fitted at the linear factor that gives it the codes' median volume (where they lie
    densest; at most ``MAX_SCALE`` either way). Cells within the codes' sizes keep 1: a free scale
    would trade with the code (the code-norm regulariser prefers a small code scaled up, a generic
    blob).
    """
    v = np.asarray([x for x in code_volumes if x > 0], float)
    if not v.size or volume <= 0 or v.min() <= volume <= v.max():
        return 1.0
    return float(np.clip((volume / np.median(v)) ** (1 / 3), 1 / MAX_SCALE, MAX_SCALE))


def starts(decoder, pool: Pool, codes: torch.Tensor, opts: FitOptions, *, rotations: bool, gen,
           frames_of_codes: list | None = None, reg: float = 0.0, scale: bool = False):
    """The ``opts.candidates`` best (code, rotation, scale) starts by the loss on ``probe_points`` pool points.

    With ``scale``, a cell out of the learned codes' sizes (:func:`size_scale`) also gets every start
    at that scale (the rotation hypotheses built with the code nearest to the data brought to it); the
    starts at scale 1 stay, so a cell just beyond the codes' sizes can still be fitted unscaled.

    Returns
    -------
    codes (G, L), rotations (G, 3, 3) or None, log-scales (G,) or None, and a dict describing the search.
    """
    import torch

    from cellinr.geometry import orientation as orient

    mean = codes.mean(0, keepdim=True)
    cand = torch.cat([codes, mean]) if opts.init == "best" else mean
    pick = torch.randint(len(pool.target), (opts.probe_points,), generator=gen).to(pool.target.device)
    xyzt, target = pool.xyzt[pick], pool.target[pick]
    info: dict = {}
    if (rotations or scale) and frames_of_codes is None and pool.frame is not None:
        frames_of_codes = code_frames(decoder, cand)
    factors = [1.0]
    if scale and pool.frame is not None:
        factor = size_scale(pool.volume, [v for _, v in frames_of_codes[: len(codes)]])
        if factor != 1.0:
            factors.append(factor)
            info["scale"] = factor
    cc, rr, sc = [], [], []
    for factor in factors:
        ls = torch.full((len(cand),), math.log(factor), dtype=torch.float32, device=codes.device)
        if not rotations:
            cc.append(cand), sc.append(ls)
            continue
        if pool.frame is None:  # nothing inside: no orientation to find
            hyp = torch.eye(3, device=codes.device)[None]
            j0 = 0
        else:
            # stage 1: every rotation hypothesis with the code whose invariant descriptor is nearest, few points
            d_data = descriptor(pool.frame[1], pool.volume) / factor  # lengths: the data at the codes' scale
            d_codes = np.stack([descriptor(f[1], v) for f, v in frames_of_codes[: len(cand)]])
            j0 = int(np.argmin(np.linalg.norm(d_codes - d_data, axis=1)))
            hyp = torch.as_tensor(orient.candidate_rotations(frames_of_codes[j0][0], pool.frame,
                                                             rel_tol=opts.rel_tol, n_spin=opts.n_spin,
                                                             n_grid=opts.n_grid),
                                  dtype=torch.float32, device=codes.device)
            info["kind"] = orient.degeneracy(pool.frame[1], opts.rel_tol)
        few = slice(0, opts.score_points)
        loss1 = _batched_loss(decoder, cand[j0].expand(len(hyp), -1), hyp, xyzt[few], target[few], reg,
                              ls[j0].expand(len(hyp)))
        keep = hyp[torch.argsort(loss1)[: opts.rotation_keep]]
        info["n_hypotheses"] = info.get("n_hypotheses", 0) + len(hyp)
        # stage 2: the kept rotations with every candidate code, on all probe points
        cc.append(cand.repeat_interleave(len(keep), 0))
        rr.append(keep.repeat(len(cand), 1, 1))
        sc.append(ls.repeat_interleave(len(keep), 0))
    cc, sc = torch.cat(cc), torch.cat(sc)
    rr = torch.cat(rr) if rotations else None
    scaled = sc if len(factors) > 1 else None
    loss = _batched_loss(decoder, cc, rr, xyzt, target, reg, scaled)
    best = torch.argsort(loss)[: opts.candidates]
    info["n_starts"] = len(cc)
    return cc[best], None if rr is None else rr[best], None if scaled is None else scaled[best], info


def _optimise(decoder, z0, r0, pool: Pool, *, steps: int, points: tuple[int, int], lr: float, lr_end: float,
              rotation_lr: float, reg: float, gen, log_scales=None):
    """Adam on G candidates at once (independent: the summed loss has separate gradients); the
    log-scales (G,), if given, stay fixed."""
    import torch

    from cellinr.nn.rotation import matrix_to_quaternion, quaternion_to_matrix

    z = z0.clone().requires_grad_(True)
    groups = [{"params": [z], "lr": lr}]
    q = None
    if r0 is not None:
        q = matrix_to_quaternion(r0).clone().requires_grad_(True)
        groups.append({"params": [q], "lr": rotation_lr})
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    n0, n1 = points
    for k in range(steps):
        n = round(n0 * (n1 / n0) ** (k / max(1, steps - 1)))
        pick = torch.randint(len(pool.target), (n,), generator=gen).to(pool.target.device)
        rot = None if q is None else quaternion_to_matrix(q)
        loss = _loss(decoder, z, rot, pool.xyzt[pick], pool.target[pick], reg, log_scales).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        frac = 0.5 * (1 + math.cos(math.pi * (k + 1) / max(1, steps)))  # cosine from 1 to lr_end
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * (lr_end + (1 - lr_end) * frac)
    z = z.detach()
    rot = None if q is None else quaternion_to_matrix(q.detach())
    return z, rot


def fit_sequence(decoder, pool: Pool, codes: torch.Tensor, opts: FitOptions | None = None, *,
                 rotations: bool = False, scale: bool = False, reg: float = 1e-4,
                 frames_of_codes: list | None = None, seed: int = 0) -> dict:
    """Fit one code (and rotation, scale) to ``pool`` (:func:`point_pool`); the decoder is not changed.

    Parameters
    ----------
    decoder : :class:`cellinr.nn.decoder.AutoDecoder` (its parameters should not require grad)
    pool : the sequence's points, on the decoder's device
    codes : (N, L) learned codes (start candidates), on the decoder's device
    opts : the procedure's parameters (default :class:`FitOptions`)
    rotations : also fit a rotation R (the network sees ``f(z, R p)``)
    scale : fit a cell larger (smaller) than all the learned codes' shapes at a scale s
        (``s f(z, R p / s)``, :func:`size_scale`); cells within their sizes are fitted as without
    reg : lambda of ``lambda * ||z||``
    frames_of_codes : :func:`code_frames` of ``[codes; mean]`` (computed once per run by the caller;
        computed here when needed and not given)
    seed : seed of the point draws

    Returns
    -------
    dict: ``code`` (L,), ``rotation`` (3, 3) or None, ``scale`` (float; 1 without ``scale``), ``loss``
    (on the evaluation batch), ``seconds`` (wall time), ``starts`` (information on the candidate starts).
    """
    import torch

    from cellinr.nn.rotation import rotation_angle

    opts = opts or FitOptions()
    gen = torch.Generator().manual_seed(int(seed))
    t0 = time.perf_counter()
    if opts.init == "mean" and not rotations and not scale:
        z0, r0, s0, info = codes.mean(0, keepdim=True), None, None, {"n_starts": 1}
    else:
        z0, r0, s0, info = starts(decoder, pool, codes, opts, rotations=rotations, gen=gen,
                                  frames_of_codes=frames_of_codes, reg=reg, scale=scale)
    evaluate = torch.randint(len(pool.target), (min(opts.eval_points, len(pool.target)),),
                             generator=gen).to(pool.target.device)
    if len(z0) > 1 and opts.probe_steps > 0:
        z0, r0 = _optimise(decoder, z0, r0, pool, steps=opts.probe_steps, points=(opts.probe_points,) * 2,
                           lr=opts.lr, lr_end=1.0, rotation_lr=opts.rotation_lr, reg=reg, gen=gen, log_scales=s0)
        loss = _batched_loss(decoder, z0, r0, pool.xyzt[evaluate], pool.target[evaluate], reg, s0)
        j = int(torch.argmin(loss))
        if r0 is not None:
            # a symmetric shape fits equally well in several orientations: prefer the smallest rotation
            tied = torch.nonzero(loss <= loss[j] * (1 + opts.tie) + 1e-5).flatten()
            angles = torch.stack([rotation_angle(r0[k]) for k in tied])
            j = int(tied[int(torch.argmin(angles))])
        info["probe_losses"] = [round(float(v), 5) for v in loss]
        pick = slice(j, j + 1)
    else:
        pick = slice(0, 1)
    z0, r0, s0 = z0[pick], None if r0 is None else r0[pick], None if s0 is None else s0[pick]
    z, rot = _optimise(decoder, z0, r0, pool, steps=opts.steps, points=opts.points, lr=opts.lr,
                       lr_end=opts.lr_end, rotation_lr=opts.rotation_lr, reg=reg, gen=gen, log_scales=s0)
    final = float(_batched_loss(decoder, z, rot, pool.xyzt[evaluate], pool.target[evaluate], reg, s0)[0])
    return {"code": z[0], "rotation": None if rot is None else rot[0],
            "scale": 1.0 if s0 is None else float(s0[0].exp()), "loss": final,
            "seconds": time.perf_counter() - t0, "starts": info}
