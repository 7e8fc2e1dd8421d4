"""Orientation of SDF sequences: principal frames, rotation hypotheses and SDF alignment.

Used to initialise the learned per-sequence rotations of training (``--rotations``) and the
rotation of test-time fitting, so that disentanglement does not depend on the rotations being
small. All functions are pure (no run folders, no files).

Conventions (as everywhere in cellinr): a volume is a (Z, Y, X) or (T, Z, Y, X) array on the grid
whose voxel centres have network coordinates ``linspace(-1, 1, n)`` per axis; points are row vectors
(x, y, z) (x = last array axis); rotations act on column vectors, the network sees
``f(z, R p)``, i.e. the canonical shape is ``g(q) = SDF(R^T q)``. Rotations are about the cube
centre (the origin), like the network's.

Method
------
1. :func:`second_moments` of the inside voxels (SDF <= 0) of all frames of a sequence, about the
   sequence's overall centroid. Pooling all frames makes the frame rotation-equivariant for
   time-varying shapes (every frame is rotated by the same R) and less noisy than one frame.
2. :func:`principal_frame`: eigenvectors E (columns, det +1) with eigenvalues descending. For a
   rotated copy, ``cov' = A cov A^T`` so ``E' = A E S`` with S one of the 4 proper sign flips
   (:func:`sign_flips`); with two (near-)equal eigenvalues the frame is only defined up to a spin
   about the distinct axis, with three up to any rotation.
3. :func:`frame_hypotheses`: the candidate rotations S in the principal frame: 4 sign flips when
   the eigenvalues are distinct, spins about the distinct axis (and its flip) when two are
   degenerate, a fixed near-uniform SO(3) set when all three are.
4. :func:`align`: rotation R mapping a moving sequence onto a reference sequence,
   ``R = E_ref S E_mov^T`` over the hypotheses, each scored by the L1 distance of the resampled
   SDFs (:func:`rotate_volume`), the best few refined by gradient descent on that distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cellinr.geometry.grid import axis_coords
from cellinr.nn.rotation import matrix_to_quaternion, quaternion_to_matrix

# ------------------------------------------------------------------------------- moments and frames


class NoInsideVoxels(ValueError):
    """A volume or sequence without any inside voxel has no principal frame."""


def grid_coords(shape: Sequence[int], spacing: Sequence[float] | None = None) -> list[np.ndarray]:
    """Per array axis (z, y, x) the voxel-centre coordinates (:func:`cellinr.geometry.grid.axis_coords`,
    times ``spacing``)."""
    s = np.ones(3) if spacing is None else np.broadcast_to(np.asarray(spacing, float), (3,))
    return [axis_coords(n) * s[a] for a, n in enumerate(shape)]


def second_moments(volumes, spacing: Sequence[float] | None = None, *, threshold: float = 0.0):
    """Centroid, covariance and voxel count of the inside voxels of a volume or a sequence.

    Parameters
    ----------
    volumes : (Z, Y, X) or (T, Z, Y, X) array, or a sequence of (Z, Y, X) arrays; bool masks (True
        inside) or SDFs (inside: ``<= threshold``).
    spacing : (z, y, x) scale of the coordinates (default 1: network coordinates).

    Returns
    -------
    centroid : (3,) float64, (x, y, z) order
    cov : (3, 3) float64, second central moment of the pooled inside voxels of all frames (x, y, z)
    n : number of inside voxels (all frames)

    Raises
    ------
    NoInsideVoxels : no frame has an inside voxel.
    """
    frames = [volumes] if (isinstance(volumes, np.ndarray) and volumes.ndim == 3) else volumes  # any iterable
    s1 = np.zeros(3)
    s2 = np.zeros((3, 3))
    n = 0
    for v in frames:
        v = np.asarray(v)
        inside = v if v.dtype == bool else v <= threshold
        idx = np.nonzero(inside)
        if not len(idx[0]):
            continue
        cz, cy, cx = grid_coords(v.shape, spacing)
        p = np.stack([cx[idx[2]], cy[idx[1]], cz[idx[0]]], 1)
        s1 += p.sum(0)
        s2 += p.T @ p
        n += len(p)
    if n == 0:
        raise NoInsideVoxels("no inside voxels")
    c = s1 / n
    return c, s2 / n - np.outer(c, c), n


def principal_frame(volumes, spacing: Sequence[float] | None = None, *, threshold: float = 0.0):
    """Principal axes of the inside voxels of a volume or sequence (mask or SDF).

    Returns
    -------
    axes : (3, 3) float64 rotation (det +1) whose columns are the principal axes (x, y, z
        coordinates), eigenvalues descending: ``cov = axes @ diag(eigenvalues) @ axes.T``
    eigenvalues : (3,) descending
    centroid : (3,)
    """
    c, cov, _ = second_moments(volumes, spacing, threshold=threshold)
    return frame_from_moments(cov, c)


def frame_from_moments(cov, centroid):
    """(axes, eigenvalues, centroid) of a covariance: eigenvectors as columns (det +1), eigenvalues descending."""
    w, e = np.linalg.eigh(np.asarray(cov, float))
    order = np.argsort(w)[::-1]
    w, e = w[order], e[:, order].copy()
    if np.linalg.det(e) < 0:
        e[:, 2] = -e[:, 2]
    return e, w, np.asarray(centroid, float)


def degeneracy(eigenvalues, rel_tol: float = 0.08) -> str:
    """``distinct``, ``prolate`` (the two smallest equal: axis 0 distinct), ``oblate`` (the two largest
    equal: axis 2 distinct) or ``spherical``, by relative gaps ``(l_k - l_k+1) / l_0 < rel_tol``."""
    w = np.asarray(eigenvalues, float)
    scale = max(float(w[0]), 1e-30)
    g01 = (w[0] - w[1]) / scale < rel_tol
    g12 = (w[1] - w[2]) / scale < rel_tol
    if g01 and g12:
        return "spherical"
    if g01:
        return "oblate"
    if g12:
        return "prolate"
    return "distinct"


def sign_flips() -> np.ndarray:
    """(4, 3, 3) the proper diagonal sign matrices: I and the half turns about the three axes."""
    return np.stack([np.diag(d).astype(float) for d in ([1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1])])


def axis_rotation(axis: int, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` about coordinate axis ``axis`` (0 = x, 1 = y, 2 = z)."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def so3_grid(n: int = 576, seed: int = 0) -> np.ndarray:
    """(n, 3, 3) near-uniform rotations: a fixed Haar sample, farthest-point thinned from 8 n draws.

    576 rotations cover SO(3) with a maximum gap of about 25 degrees, enough for a basin of
    gradient refinement.
    """
    g = np.random.default_rng(seed)
    q = g.normal(size=(8 * n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    chosen = [0]
    d = 1.0 - np.abs(q @ q[0])  # 1 - |<q, q0>|: monotone in the rotation angle
    for _ in range(n - 1):
        k = int(np.argmax(d))
        chosen.append(k)
        d = np.minimum(d, 1.0 - np.abs(q @ q[k]))
    return quaternion_to_matrix(torch.from_numpy(q[chosen])).numpy()


def frame_hypotheses(kind: str = "distinct", *, n_spin: int = 12, n_grid: int = 576) -> np.ndarray:
    """(K, 3, 3) candidate rotations S in the principal frame (``R = E_ref S E_mov^T``).

    ``distinct``: the 4 sign flips. ``prolate`` (axis 0 distinct): ``n_spin`` spins about axis 0,
    each also with the half turn that reverses axis 0 (2 n_spin). ``oblate``: the same about axis 2.
    ``spherical``: :func:`so3_grid` (``n_grid``).
    """
    if kind == "distinct":
        return sign_flips()
    if kind in ("prolate", "oblate"):
        ax = 0 if kind == "prolate" else 2
        other = 2 if ax == 0 else 0
        out = []
        for k in range(n_spin):
            spin = axis_rotation(ax, 2 * math.pi * k / n_spin)
            out += [spin, spin @ axis_rotation(other, math.pi)]
        return np.stack(out)
    if kind == "spherical":
        return so3_grid(n_grid)
    raise ValueError(f"kind {kind!r}: expected distinct, prolate, oblate or spherical")


def candidate_rotations(frame_ref, frame_mov, *, rel_tol: float = 0.08, n_spin: int = 12,
                        n_grid: int = 576) -> np.ndarray:
    """(K, 3, 3) rotations R that map the moving sequence's principal frame onto the reference's.

    ``frame_*`` are :func:`principal_frame` results (axes, eigenvalues, ...). The hypotheses come
    from the more degenerate of the two frames (a spin ambiguity of either makes the pair ambiguous).
    """
    e_ref, w_ref = frame_ref[0], frame_ref[1]
    e_mov, w_mov = frame_mov[0], frame_mov[1]
    rank = {"distinct": 0, "prolate": 1, "oblate": 1, "spherical": 2}
    k_ref, k_mov = degeneracy(w_ref, rel_tol), degeneracy(w_mov, rel_tol)
    kind = k_ref if rank[k_ref] >= rank[k_mov] else k_mov
    if kind in ("prolate", "oblate") and {k_ref, k_mov} == {"prolate", "oblate"}:
        kind = "spherical"
    return np.einsum("ij,kjl,ml->kim", e_ref, frame_hypotheses(kind, n_spin=n_spin, n_grid=n_grid), e_mov)


# ------------------------------------------------------------------------------- resampling


def rotate_volume(vol: torch.Tensor, rotation: torch.Tensor, out_shape: Sequence[int] | None = None) -> torch.Tensor:
    """The canonical view ``g(q) = vol(R^T q)`` of a volume, trilinear, differentiable in both.

    ``vol`` is (..., Z, Y, X) (leading axes, e.g. frames, share the rotation). ``rotation`` (3, 3)
    gives (..., Z', Y', X'); a batch (B, 3, 3) gives (B, ..., Z', Y', X'). Outside the cube the
    border value is repeated (fine for SDFs that are clamped to +1 far away). ``out_shape``
    (Z', Y', X') resamples onto another grid of the same cube (default: the input grid).
    """
    lead = vol.shape[:-3]
    single = rotation.dim() == 2
    r = (rotation[None] if single else rotation).to(vol.dtype)
    shape = tuple(out_shape) if out_shape is not None else tuple(vol.shape[-3:])
    cz, cy, cx = (torch.linspace(-1, 1, n, dtype=vol.dtype, device=vol.device) if n > 1
                  else torch.zeros(1, dtype=vol.dtype, device=vol.device) for n in shape)
    z, y, x = torch.meshgrid(cz, cy, cx, indexing="ij")
    q = torch.stack([x, y, z], -1).reshape(-1, 3)  # (P, 3) rows (x, y, z)
    grid = (q @ r).reshape(len(r), *shape, 3)  # rows of R^T q
    v = vol.reshape(1, -1, *vol.shape[-3:]).expand(len(r), -1, -1, -1, -1)
    out = F.grid_sample(v, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = out.reshape(len(r), *lead, *shape)
    return out[0] if single else out


def downsample(vol: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(..., Z, Y, X) -> (..., size, size, size) by trilinear resampling of the same cube."""
    t = torch.as_tensor(np.asarray(vol, np.float32)) if not isinstance(vol, torch.Tensor) else vol.float()
    lead = t.shape[:-3]
    x = t.reshape(-1, 1, *t.shape[-3:])
    if tuple(t.shape[-3:]) != (size,) * 3:
        x = F.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=True)
    return x.reshape(*lead, size, size, size)


# ------------------------------------------------------------------------------- alignment


def score_rotations(moving: torch.Tensor, reference: torch.Tensor, rotations: torch.Tensor, *, clip: float = 0.3,
                    batch: int = 64) -> torch.Tensor:
    """L1 distance between ``reference`` (T, Z, Y, X) and ``moving`` rotated by each of ``rotations`` (K, 3, 3).

    ``moving`` and ``reference`` are on the same grid with matched frames (same T).
    """
    out = []
    with torch.no_grad():
        for r in torch.split(rotations, batch):
            g = rotate_volume(moving, r)  # (k, T, Z, Y, X)
            out.append((g.clamp(max=clip) - reference[None].clamp(max=clip)).abs().mean(dim=(1, 2, 3, 4)))
    return torch.cat(out)


def refine_rotation(moving: torch.Tensor, reference: torch.Tensor, rotation: np.ndarray | torch.Tensor, *,
                    steps: int = 60, lr: float = 0.03, clip: float = 0.3) -> tuple[np.ndarray, float]:
    """Gradient refinement (Adam on a quaternion) of ``rotation`` minimising :func:`score_rotations`."""
    q = matrix_to_quaternion(torch.as_tensor(rotation, dtype=torch.float32)).clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    ref = reference.clamp(max=clip)
    for _ in range(steps):
        g = rotate_volume(moving, quaternion_to_matrix(q))
        loss = (g.clamp(max=clip) - ref).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        r = quaternion_to_matrix(q.detach())
        final = float(score_rotations(moving, reference, r[None], clip=clip)[0])
    return r.double().numpy(), final


def match_frames(n_frames: int, n_target: int) -> np.ndarray:
    """Frame indices of a sequence of ``n_frames`` nearest to ``n_target`` equally spaced times."""
    if n_target == 1 or n_frames == 1:
        return np.zeros(max(1, n_target), int)
    return np.rint(np.linspace(0, n_frames - 1, n_target)).astype(int)


def summarize(frames, n_frames: int | None = None, *, size: int = 32, n_coarse: int = 4) -> dict:
    """What alignment needs of one sequence, read in one pass, one frame in memory at a time.

    ``frames``: (T, Z, Y, X) array or an iterable of (Z, Y, X) SDF frames (``n_frames`` of them, needed
    for an iterable without ``len``). Returns ``frame`` (:func:`principal_frame` of all frames) and
    ``coarse`` ((n_coarse, size, size, size) tensor: equally spaced frames resampled to size^3).
    """
    if n_frames is None:
        n_frames = len(frames)
    keep = set(match_frames(n_frames, min(n_coarse, n_frames)).tolist())
    coarse = []

    def moments():
        for t, f in enumerate(frames):
            f = np.asarray(f, np.float32)
            if t in keep:
                coarse.append(downsample(f, size))
            yield f

    c, cov, _ = second_moments(moments())
    return {"frame": frame_from_moments(cov, c), "coarse": torch.stack(coarse), "n_frames": n_frames}


def align(moving, reference, *, size: int = 32, frames: int = 4, rel_tol: float = 0.08, n_spin: int = 12,
          n_grid: int = 576, top: int = 3, steps: int = 60, lr: float = 0.03, clip: float = 0.3) -> dict:
    """Rotation R such that ``moving(R^T q) ~ reference(q)`` (so ``f(z, R p)`` with the reference's code).

    Parameters
    ----------
    moving, reference : (T, Z, Y, X) SDF sequences (normalised, negative inside; any T, any grid),
        or their :func:`summarize` results.
    size : alignment grid (the volumes are resampled to size^3).
    frames : number of matched frames used (equally spaced in time in both sequences).
    rel_tol, n_spin, n_grid : hypotheses (:func:`candidate_rotations`).
    top : number of best-scoring hypotheses refined by gradient (``steps``, ``lr``).
    clip : SDFs are clipped to [-1, clip] for the distance.

    Returns
    -------
    dict with ``rotation`` (3, 3), ``loss`` (its distance), ``hypotheses`` (K), ``kind``
    (degeneracy of the two frames), ``scores`` (K,) of the unrefined hypotheses, ``start`` (the
    hypothesis the result was refined from).
    """
    sm = moving if isinstance(moving, dict) else summarize(moving, size=size, n_coarse=frames)
    sr = reference if isinstance(reference, dict) else summarize(reference, size=size, n_coarse=frames)
    fm, fr = sm["frame"], sr["frame"]
    cands = candidate_rotations(fr, fm, rel_tol=rel_tol, n_spin=n_spin, n_grid=n_grid)
    n_t = min(len(sm["coarse"]), len(sr["coarse"]))
    mov = sm["coarse"][match_frames(len(sm["coarse"]), n_t)]
    ref = sr["coarse"][match_frames(len(sr["coarse"]), n_t)]
    scores = score_rotations(mov, ref, torch.as_tensor(cands, dtype=torch.float32), clip=clip)
    best = torch.argsort(scores)[: max(1, top)].tolist()
    refined = [refine_rotation(mov, ref, cands[k], steps=steps, lr=lr, clip=clip) for k in best]
    j = int(np.argmin([r[1] for r in refined]))
    kinds = (degeneracy(fr[1], rel_tol), degeneracy(fm[1], rel_tol))
    return {"rotation": refined[j][0], "loss": refined[j][1], "hypotheses": len(cands),
            "kind": kinds, "scores": scores.numpy(), "start": cands[best[j]]}


def initial_rotations(sequences, *, reference: int = 0, size: int = 32, frames: int = 4,
                      **align_kw) -> tuple[np.ndarray, list[dict]]:
    """Initial learned rotations R_i for training: every sequence aligned to sequence ``reference``.

    ``sequences``: list of (T, Z, Y, X) SDF arrays, or of (iterable of frames, n_frames) pairs, or of
    :func:`summarize` results. R_reference = I, so the canonical frame is the reference sequence's
    own frame (its shape stays where it is in the cube). Returns (N, 3, 3) rotations and the
    per-sequence :func:`align` results.
    """
    def summary(s):
        if isinstance(s, dict):
            return s
        if isinstance(s, tuple):
            return summarize(s[0], s[1], size=size, n_coarse=frames)
        return summarize(s, size=size, n_coarse=frames)

    ref = summary(sequences[reference])
    rots, infos = [], []
    for i, s in enumerate(sequences):
        if i == reference:
            kind = degeneracy(ref["frame"][1], align_kw.get("rel_tol", 0.08))
            rots.append(np.eye(3))
            infos.append({"rotation": np.eye(3), "loss": 0.0, "kind": (kind, kind)})
            continue
        res = align(summary(s), ref, **align_kw)
        rots.append(res["rotation"])
        infos.append(res)
    return np.stack(rots), infos
