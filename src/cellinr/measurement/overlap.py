"""Overlap and surface-distance metrics between two masks (or two mask sequences) of equal size.

Dice and Jaccard count voxels. Surface distances use the surface voxels of each mask (foreground
voxels with a background neighbour in the 6-neighbourhood) and the Euclidean distance transform to
the other mask's surface voxels (:func:`scipy.ndimage.distance_transform_edt`, ``sampling`` = voxel
size for microns, 1 for voxels), as in the usual segmentation-evaluation tools:

- Hausdorff distance: the largest distance from a surface voxel of one mask to the other surface
  (both directions); HD95: the 95th percentile of the pooled distances of both directions (as
  ``medpy.metric.binary.hd95``; MONAI instead takes the larger of the two directed percentiles);
- average symmetric surface distance (ASSD): the mean of the pooled distances (medpy's ``assd``
  averages the two directed means instead; they differ when the surfaces have different sizes).

If exactly one mask is empty the distances are infinite; if both are, 0 (and Dice = Jaccard = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellinr.errors import InputError, ParameterError
from cellinr.geometry import regions

#: Keys of :func:`overlap_metrics`, in column order.
OVERLAP_KEYS = (
    "dice",
    "jaccard",
    "hausdorff_vox",
    "hausdorff95_vox",
    "assd_vox",
    "hausdorff_um",
    "hausdorff95_um",
    "assd_um",
)


def _check_pair(a: np.ndarray, b: np.ndarray, name_a: str = "a", name_b: str = "b") -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a) != 0
    b = np.asarray(b) != 0
    if a.shape != b.shape:
        raise InputError(f"{name_a} and {name_b}: masks of different sizes {a.shape} and {b.shape}")
    if a.ndim not in (2, 3):
        raise InputError(f"{name_a}: expected 2D or 3D masks, got shape {a.shape}")
    return a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2 |A & B| / (|A| + |B|) (1 when both masks are empty)."""
    return regions.dice(*_check_pair(a, b))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard index |A & B| / |A | B| (1 when both masks are empty)."""
    a, b = _check_pair(a, b)
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one background 6-neighbour (the image border counts as background)."""
    from scipy import ndimage as ndi

    mask = np.asarray(mask) != 0
    eroded = ndi.binary_erosion(mask, structure=ndi.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~eroded


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from the surface voxels of ``a`` to the surface of ``b`` and back.

    Parameters
    ----------
    a, b : (Z, Y, X) or (Y, X) bool ndarrays of equal shape, both non-empty
    spacing : voxel size per axis (microns); default 1

    Returns
    -------
    d_ab : (Na,) float ndarray
        For each surface voxel of ``a``, the distance to the nearest surface voxel of ``b``.
    d_ba : (Nb,) float ndarray
    """
    a, b = _check_pair(a, b)
    spacing = _spacing(spacing, a.ndim)
    if not a.any() or not b.any():
        raise InputError("surface distances need two non-empty masks")
    # crop to the joint bounding box (plus a margin) so the distance transforms stay small
    both = a | b
    box = tuple(
        slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2)
        for idx in (np.flatnonzero(both.any(axis=tuple(x for x in range(a.ndim) if x != ax))) for ax in range(a.ndim))
    )
    a, b = a[box], b[box]
    sa, sb = surface_voxels(a), surface_voxels(b)
    return _edt_to(sb, spacing)[sa], _edt_to(sa, spacing)[sb]


def _edt_to(surface: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(~surface, sampling=spacing)


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(sp) == 3 and ndim == 2:
        sp = sp[1:]
    if len(sp) == 1:
        sp = sp * ndim
    if len(sp) != ndim or not all(s > 0 for s in sp):
        raise ParameterError(f"spacing: expected {ndim} positive voxel sizes, got {sp}")
    return sp


def overlap_metrics(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Dice, Jaccard, Hausdorff (max and 95th percentile) and ASSD, in voxels and microns.

    Parameters
    ----------
    a, b : (Z, Y, X) or (Y, X) bool ndarrays of equal shape
    spacing : voxel size (z, y, x) or (y, x) in microns; default 1

    Returns
    -------
    dict
        Keys :data:`OVERLAP_KEYS`.
    """
    a, b = _check_pair(a, b)
    spacing = _spacing(spacing, a.ndim)
    row = {"dice": dice(a, b), "jaccard": jaccard(a, b)}
    empty_a, empty_b = not a.any(), not b.any()
    if empty_a or empty_b:
        value = 0.0 if (empty_a and empty_b) else float("inf")
        for unit in ("vox", "um"):
            row.update({f"hausdorff_{unit}": value, f"hausdorff95_{unit}": value, f"assd_{unit}": value})
        return {k: row[k] for k in OVERLAP_KEYS}
    for unit, sp in (("vox", (1.0,) * a.ndim), ("um", spacing)):
        d_ab, d_ba = surface_distances(a, b, sp)
        pooled = np.concatenate([d_ab, d_ba])
        row[f"hausdorff_{unit}"] = float(max(d_ab.max(), d_ba.max()))
        row[f"hausdorff95_{unit}"] = float(np.percentile(pooled, 95))
        row[f"assd_{unit}"] = float(pooled.mean())
    return {k: row[k] for k in OVERLAP_KEYS}


#: Overlap of the thin parts (protrusions), added by :func:`overlap_sequence` with ``protrusion_radius_um``.
THIN_KEYS = ("thin_part_dice", "protrusion_dice")


def overlap_sequence(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None, *, name: str = "sequence",
    protrusion_radius_um: float | None = None,
) -> list[dict]:
    """Per-frame :func:`overlap_metrics` of two mask sequences.

    Parameters
    ----------
    a, b : (T, Z, Y, X) or (T, Y, X) bool ndarrays of equal shape
    protrusion_radius_um : when given, also the thin-part and protrusion Dice of every frame
        (:mod:`cellinr.measurement.protrusions`, opening radius in microns)

    Returns
    -------
    list of dict
        One row per frame: ``sequence``, ``frame``, :data:`OVERLAP_KEYS` (and :data:`THIN_KEYS`).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"{name}: mask sequences of different sizes {a.shape} and {b.shape}")
    rows = []
    for t in range(a.shape[0]):
        row = {"sequence": name, "frame": t, **overlap_metrics(a[t], b[t], spacing)}
        if protrusion_radius_um is not None:
            from cellinr.measurement.protrusions import protrusion_dice, thin_part_dice

            kw = {"radius_um": float(protrusion_radius_um), "spacing": spacing}
            row["thin_part_dice"] = thin_part_dice(a[t], b[t], **kw)
            row["protrusion_dice"] = protrusion_dice(a[t], b[t], **kw)
        rows.append(row)
    return rows


# -- two mask sets (``cellinr overlap``) ---------------------------------------------------------------
#: Statistics of the per-frame values in :func:`overlap_summary`.
SUMMARY_STATS = ("mean", "std", "min", "median", "max")


def pair_mask_inputs(a, b) -> list[tuple[str, object, object]]:
    """(name, file of A, file of B) pairs: the two inputs themselves when each is one sequence, else the
    sequences of two folders matched by name (file stem). Raises InputError on unmatched names."""
    from pathlib import Path

    from cellinr.io.masks import mask_inputs

    fa, fb = mask_inputs(a), mask_inputs(b)
    if len(fa) == 1 and len(fb) == 1:
        return [(Path(fa[0]).stem if Path(fa[0]).is_file() else Path(fa[0]).name, fa[0], fb[0])]

    def stem(p):
        return p.stem if p.is_file() else p.name

    by_a, by_b = {stem(p): p for p in fa}, {stem(p): p for p in fb}
    common = sorted(set(by_a) & set(by_b))
    if not common:
        raise InputError(f"{a} and {b}: no mask sequences with the same name (A: {', '.join(sorted(by_a)[:5])}; "
                         f"B: {', '.join(sorted(by_b)[:5])})")
    missing = sorted(set(by_a) ^ set(by_b))
    if missing:
        raise InputError(f"{a} and {b}: {len(missing)} sequences are only in one of them (first: {missing[0]})")
    return [(n, by_a[n], by_b[n]) for n in common]


def _read_binary(path, *, spacing, axes, dataset):
    from cellinr.io.sources import open_source

    with open_source(path, axes=axes, spacing=spacing, dataset=dataset, ndim=None) as src:
        masks = src.read_all_labels() != 0
        return masks, src.spacing


def compare_masks(
    a, b, *, spacing: Sequence[float] | None = None, axes: str | None = None, dataset: str | None = None,
    protrusion_radius_um: float | None = 1.5,
) -> tuple[list[dict], dict]:
    """Per-frame overlap of two mask inputs (foreground = any value > 0, or SDF <= 0) and their summary.

    Parameters
    ----------
    a, b : mask files or folders (:func:`cellinr.io.masks.mask_inputs`); two folders are matched by
        sequence name.
    spacing : voxel size (z, y, x) microns for both; default the metadata of ``a`` (then ``b``),
        else 1 with a warning. Different voxel sizes in the two files raise InputError.
    axes, dataset : as in :func:`cellinr.io.sources.open_source`.
    protrusion_radius_um : opening radius of the thin-part and protrusion Dice (None: not computed).

    Returns
    -------
    rows : list of dict, one per sequence and frame: ``sequence``, ``frame`` and :data:`OVERLAP_KEYS`.
    summary : :func:`overlap_summary` of the rows, plus ``spacing_um`` and ``sequences``.
    """
    import logging

    log = logging.getLogger(__name__)
    rows = []
    used = None
    for name, fa, fb in pair_mask_inputs(a, b):
        ma, sa = _read_binary(fa, spacing=spacing, axes=axes, dataset=dataset)
        mb, sb = _read_binary(fb, spacing=spacing, axes=axes, dataset=dataset)
        if ma.shape != mb.shape:
            raise InputError(f"{fa} and {fb}: masks of different sizes {ma.shape[1:]} x {ma.shape[0]} frames and "
                             f"{mb.shape[1:]} x {mb.shape[0]} frames")
        if sa is not None and sb is not None and not np.allclose(sa, sb, rtol=1e-4):
            raise InputError(f"{fa} and {fb}: different voxel sizes {tuple(sa)} and {tuple(sb)} um; pass --spacing "
                             "to compare them on one grid")
        sp = sa if sa is not None else sb
        if sp is None:
            log.warning("%s, %s: no voxel size in the metadata; microns = voxels (pass --spacing)", fa, fb)
            sp = (1.0,) * (ma.ndim - 1)
        used = tuple(float(s) for s in sp)
        rows.extend(overlap_sequence(ma, mb, sp, name=name, protrusion_radius_um=protrusion_radius_um))
    summary = overlap_summary(rows)
    summary["spacing_um"] = list(used) if used else None
    summary["sequences"] = sorted({r["sequence"] for r in rows})
    return rows, summary


def overlap_summary(rows: list[dict]) -> dict:
    """Per metric of :data:`OVERLAP_KEYS`: the :data:`SUMMARY_STATS` over all frames (infinite values,
    from a frame where one mask is empty, are counted in ``frames_one_empty`` and left out)."""
    out = {"frames": len(rows)}
    for key in (*OVERLAP_KEYS, *(k for k in THIN_KEYS if rows and k in rows[0])):
        values = np.array([float(r[key]) for r in rows], dtype=float)
        finite = values[np.isfinite(values)]
        out[key] = {stat: (float(getattr(np, stat)(finite)) if finite.size else float("nan"))
                    for stat in SUMMARY_STATS}
    out["frames_one_empty"] = int(sum(1 for r in rows if not np.isfinite(float(r["hausdorff_vox"]))))
    return out
