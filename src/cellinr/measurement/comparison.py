"""Compare two sets of cell shapes (e.g. real and synthetic) by their shape descriptors.

What is computed (and written to ``REPORT_DIR``):

- Per descriptor: the 1-Wasserstein distance (:func:`scipy.stats.wasserstein_distance`, in the
  descriptor's unit and divided by the pooled standard deviation) and the two-sample
  Kolmogorov-Smirnov statistic and p-value (:func:`scipy.stats.ks_2samp`). Frame-level descriptors
  use every frame; per-sequence descriptors (growth rates) one value per sequence; the shape change
  every frame pair.
- Multivariate two-sample score: leave-one-out 1-nearest-neighbour accuracy (1-NNA; Lopez-Paz and
  Oquab 2017), balanced over the two sets (the mean of their accuracies, so unequal set sizes do not
  move it away from 0.5), on standardised vectors of the frame-level descriptors (z-scores with the pooled mean and
  standard deviation of both sets). 0.5 means the sets are indistinguishable, 1.0 fully separable.
  Frames of one sequence are near-duplicates, so the neighbour search leaves out the whole sequence
  of the query frame (leave-one-sequence-out); otherwise two samples of one distribution would score
  near 1.
- Generative-shape metrics (Achlioptas et al. 2018, "Learning representations and generative models
  for 3D point clouds"), per sequence: each sequence becomes its trajectory of standardised
  descriptor vectors, linearly resampled to :data:`TRAJECTORY_POINTS` points of normalised time
  (a single-frame sequence is a constant trajectory); the distance between two sequences is the root
  mean square over time of the Euclidean distance of their vectors. Coverage (COV): the fraction of
  reference (first-set) sequences that are the nearest reference of at least one second-set
  sequence (1 ideal). Minimum matching distance (MMD): the mean over reference sequences of the
  distance to the closest second-set sequence (0 ideal; in standard-deviation units). The
  sequence-level 1-NNA is reported as well.
- Figures: distributions (violins with points and quartiles), time courses (mean ± sd over normalised
  time), a PCA embedding of the standardised frame vectors, and example masks (maximum-intensity
  projections) when masks were given; a Markdown and an HTML report; metrics.json and CSV tables.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr._util.jsonsafe import json_safe
from cellinr.errors import InputError, ParameterError
from cellinr.measurement.descriptors import (
    DESCRIPTORS_2D,
    DESCRIPTORS_3D,
    SEQUENCE_DESCRIPTORS_2D,
    SEQUENCE_DESCRIPTORS_3D,
)
from cellinr.measurement.shape_sets import (
    PER_SEQUENCE,
    TRAJECTORY_POINTS,
    ShapeSet,
    descriptor_samples,
    load_shape_set,
    sequence_values,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# statistics


TIMINGS = ("strict", "physical")
#: Quantities measured per frame step, which depend on the frame rate.
FRAME_RATE_QUANTITIES = ("growth_rate_um3_per_frame", "growth_rate_um2_per_frame", "relative_growth_rate_per_frame",
                         "shape_change")


def frame_intervals(shape_set: ShapeSet) -> set[float]:
    """The distinct known frame intervals (minutes) of a set's rows."""
    values = set()
    for r in shape_set.rows:
        try:
            v = float(r.get("frame_interval_min", "nan"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v) and v > 0:
            values.add(round(v, 9))
    return values


def _check_timing(sets: Sequence[ShapeSet], timing: str) -> tuple[str, ...]:
    """Frame-rate-dependent quantities to leave out (none when the timings agree or are unknown)."""
    if timing not in TIMINGS:
        raise ParameterError(f"--timing {timing!r}: choose one of {', '.join(TIMINGS)}")
    a, b = (frame_intervals(s) for s in sets)
    if not a or not b or (len(a) == len(b) == 1 and abs(next(iter(a)) - next(iter(b))) <= 1e-3 * max(a | b)):
        return ()
    text = (f"{sets[0].name} has frames every {', '.join(f'{v:.4g}' for v in sorted(a))} min, "
            f"{sets[1].name} every {', '.join(f'{v:.4g}' for v in sorted(b))} min")
    if timing == "strict":
        raise InputError(f"{text}: per-frame quantities (growth per frame, shape change) are not comparable; "
                         "pass --timing physical to compare the rest, or resample one set in time")
    logger.warning("%s: leaving out the frame-rate-dependent quantities %s", text, ", ".join(FRAME_RATE_QUANTITIES))
    return FRAME_RATE_QUANTITIES


def available_descriptors(ndim: int) -> tuple[str, ...]:
    """Descriptors that :func:`compare` knows for 2D or 3D shapes."""
    if ndim == 2:
        return (*DESCRIPTORS_2D, *SEQUENCE_DESCRIPTORS_2D)
    return (*DESCRIPTORS_3D, *SEQUENCE_DESCRIPTORS_3D)


def univariate_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Wasserstein-1 (raw and over the pooled sd) and Kolmogorov-Smirnov statistic and p-value."""
    from scipy import stats

    pooled = np.concatenate([a, b])
    sd = float(pooled.std()) if len(pooled) > 1 else float("nan")
    w1 = float(stats.wasserstein_distance(a, b))
    ks = stats.ks_2samp(a, b)
    return {
        "n_a": len(a), "n_b": len(b),
        "mean_a": float(a.mean()), "sd_a": float(a.std()),
        "mean_b": float(b.mean()), "sd_b": float(b.std()),
        "wasserstein": w1,
        "wasserstein_sd": w1 / sd if sd > 0 else (0.0 if w1 == 0 else float("inf")),
        "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
    }


def one_nn_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Leave-one-out 1-nearest-neighbour two-sample accuracy (0.5: indistinguishable, 1: separable).

    The accuracy is balanced (the mean of the two sets' accuracies), so that its value for two samples
    of one distribution is 0.5 whatever the set sizes (plain accuracy tends to the larger set's share).

    Parameters
    ----------
    x : (Na, D) and y : (Nb, D) float ndarrays
        Samples of the two sets (already standardised).
    groups : (Na + Nb,) ndarray, optional
        Group id of each sample (e.g. its sequence); samples of the query's group are left out of
        its neighbour search, not only the query itself.
    """
    data = np.concatenate([x, y])
    is_b = np.r_[np.zeros(len(x), bool), np.ones(len(y), bool)]
    d = _pairwise(data, data)
    if groups is None:
        np.fill_diagonal(d, np.inf)
    else:
        groups = np.asarray(groups)
        d[groups[:, None] == groups[None, :]] = np.inf
    nearest = np.argmin(d, axis=1)
    # a query whose own set offers no candidate (its set is one sequence) must pick the other set:
    # scoring it would push the accuracy towards 0, so it is left out (NaN if a whole set is)
    own = np.where(is_b[None, :] == is_b[:, None], d, np.inf)
    valid = np.isfinite(d[np.arange(len(d)), nearest]) & np.isfinite(own.min(axis=1))
    if not valid.any():
        return float("nan")
    correct = is_b[nearest] == is_b
    # balanced over the two sets: with unequal set sizes plain accuracy is not 0.5 under the null
    if not all((valid & (is_b == side)).any() for side in (False, True)):
        return float("nan")
    rates = [correct[valid & (is_b == side)].mean() for side in (False, True)]
    return float(np.mean(rates))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def coverage_mmd(d_ref_gen: np.ndarray) -> tuple[float, float]:
    """Coverage and minimum matching distance from a (reference, generated) distance matrix."""
    if d_ref_gen.size == 0:
        return float("nan"), float("nan")
    matched = np.unique(np.argmin(d_ref_gen, axis=0))
    return len(matched) / d_ref_gen.shape[0], float(d_ref_gen.min(axis=1).mean())


def _frame_matrix(shape_set: ShapeSet, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D) frame descriptor matrix, the sequence of each row, and the normalised time."""
    x = np.stack([sequence_values(shape_set.rows, k) for k in keys], axis=1) if keys else np.zeros((len(shape_set.rows), 0))
    seqs = np.array([str(r["sequence"]) for r in shape_set.rows])
    times = sequence_values(shape_set.rows, "time")
    times = np.where(np.isfinite(times), times, 0.0)
    return x, seqs, times


def _trajectories(x: np.ndarray, seqs: np.ndarray, times: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per-sequence trajectories (S, K, D) resampled to K normalised time points."""
    grid = np.linspace(0.0, 1.0, TRAJECTORY_POINTS)
    names = list(dict.fromkeys(seqs.tolist()))
    out = np.empty((len(names), TRAJECTORY_POINTS, x.shape[1]))
    for i, name in enumerate(names):
        sel = seqs == name
        t, v = times[sel], x[sel]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        for j in range(x.shape[1]):
            out[i, :, j] = np.interp(grid, t, v[:, j]) if len(t) > 1 else v[0, j]
    return names, out


def _trajectory_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a[:, None, :, :] - b[None, :, :, :]
    return np.sqrt((diff**2).sum(-1).mean(-1))


# --------------------------------------------------------------------------------------------
# main entry


def compare(
    real,
    synthetic,
    out: str | os.PathLike,
    *,
    spacing: Sequence[float] | None = None,
    descriptors: Sequence[str] | None = None,
    names: tuple[str, str] = ("real", "synthetic"),
    axes: str | None = None,
    figures: bool = True,
    workers: int = 1,
    timing: str = "strict",
    overwrite: bool = False,
) -> Path:
    """Compare two sets of shapes and write a report with figures to ``out``.

    Parameters
    ----------
    real, synthetic : path or list of dict
        Mask TIFF(s) (a file or folder; binary masks or instance labels, ZYX / TZYX / YX / TYX),
        descriptor CSV(s) from ``cellinr measure``, or descriptor rows. The first set is the reference
        for coverage and MMD.
    out : report folder (created; must not exist unless ``overwrite``)
    spacing : (z, y, x) microns, optional
        Voxel size for masks whose files say nothing (overrides the metadata).
    descriptors : names, optional
        Descriptors to compare; default all that both sets have (see :func:`available_descriptors`).
    names : the two sets' names in the report
    figures : draw the PNG figures (False: tables and metrics only, much faster)
    workers : mask files measured in parallel (processes)
    timing : {"strict", "physical"}: sets whose frame intervals (``frame_interval_min``) are both known
        and differ are refused by ``strict``; ``physical`` then compares only quantities that do not
        depend on the frame rate (per-frame shape descriptors and growth per minute) and says so.

    Returns
    -------
    Path
        The report folder, holding ``report.md``, ``report.html``, ``metrics.json``,
        ``descriptor_stats.csv``, ``descriptors_<name>.csv`` and ``figures/*.png``.
    """
    from cellinr._util.outputs import (
        atomic_dir,
        atomic_write_text,
        check_new_output,
        check_no_overlap,
    )
    from cellinr.measurement.comparison_report import (
        draw_figures,
        write_report,
        write_stats_csv,
    )
    from cellinr.measurement.tables import write_rows

    if len(names) != 2 or names[0] == names[1]:
        raise ParameterError(f"names: need two different set names, got {names}")
    out = Path(out)
    check_no_overlap([s for s in (real, synthetic) if isinstance(s, (str, os.PathLike))], [out])
    check_new_output(out, overwrite=overwrite)
    if descriptors is not None:
        every = set(available_descriptors(2)) | set(available_descriptors(3))
        unknown = [d for d in descriptors if d not in every]
        if unknown:
            raise ParameterError(
                f"descriptors: unknown {', '.join(unknown)}; known: {', '.join(available_descriptors(3))} "
                f"(3D) and {', '.join(d for d in available_descriptors(2) if d not in available_descriptors(3))} (2D)"
            )
    sets = [load_shape_set(src, nm, spacing=spacing, axes=axes, workers=workers)
            for src, nm in zip((real, synthetic), names)]
    per_frame_quantities = _check_timing(sets, timing)
    ndims = [s.ndim for s in sets]
    if ndims[0] != ndims[1]:
        raise InputError(f"{names[0]} holds {ndims[0]}D shapes but {names[1]} holds {ndims[1]}D shapes")
    ndim = ndims[0]
    known = available_descriptors(ndim)
    if descriptors is not None:
        unknown = [d for d in descriptors if d not in known]
        if unknown:
            raise ParameterError(
                f"descriptors: unknown {', '.join(unknown)} for {ndim}D shapes; known: {', '.join(known)}"
            )
        wanted = list(dict.fromkeys(descriptors))
    else:
        wanted = list(known)
    keys = [k for k in wanted if all(len(descriptor_samples(s, k)) >= 1 for s in sets)
            and k not in per_frame_quantities]
    skipped = [k for k in wanted if k not in keys]
    if not keys:
        raise InputError(f"no descriptor has values in both sets (asked for {', '.join(wanted)})")

    stats_rows = []
    for k in keys:
        a, b = (descriptor_samples(s, k) for s in sets)
        stats_rows.append({"descriptor": k, **univariate_stats(a, b)})

    # multivariate: frame-level descriptors with spread and without missing values
    frame_keys = [k for k in keys if k not in PER_SEQUENCE and k != "shape_change"]
    mats = [_frame_matrix(s, frame_keys) for s in sets]
    pooled = np.concatenate([m[0] for m in mats])
    finite_cols = [j for j, k in enumerate(frame_keys) if np.isfinite(pooled[:, j]).mean() > 0.5]
    sd = np.nanstd(pooled, axis=0)
    use_cols = [j for j in finite_cols if sd[j] > 0]
    vec_keys = [frame_keys[j] for j in use_cols]
    multi: dict = {"descriptors": vec_keys}
    embed_points = None
    if vec_keys:
        mu = np.nanmean(pooled[:, use_cols], axis=0)
        sdv = sd[use_cols]
        std = []
        for x, seqs, times in mats:
            z = (x[:, use_cols] - mu) / sdv
            keep = np.all(np.isfinite(z), axis=1)
            std.append((z[keep], seqs[keep], times[keep]))
        multi["frames_dropped"] = int(sum(len(m[0]) for m in mats) - sum(len(z[0]) for z in std))
        if all(len(z[0]) for z in std):
            (xa, sa, ta), (xb, sb, tb) = std
            groups = np.r_[np.char.add("a:", sa.astype(str)), np.char.add("b:", sb.astype(str))]
            multi["one_nn_accuracy"] = one_nn_accuracy(xa, xb, groups)
            multi["n_frames"] = [len(xa), len(xb)]
            names_a, traj_a = _trajectories(xa, sa, ta)
            names_b, traj_b = _trajectories(xb, sb, tb)
            multi["n_sequences"] = [len(names_a), len(names_b)]
            d_ab = _trajectory_distances(traj_a, traj_b)
            cov, mmd = coverage_mmd(d_ab)
            multi["coverage"] = cov
            multi["mmd"] = mmd
            flat_a = traj_a.reshape(len(names_a), -1) / math.sqrt(TRAJECTORY_POINTS)
            flat_b = traj_b.reshape(len(names_b), -1) / math.sqrt(TRAJECTORY_POINTS)
            multi["one_nn_accuracy_sequences"] = one_nn_accuracy(flat_a, flat_b)
            # PCA of the pooled standardised frame vectors for the embedding figure
            both = np.concatenate([xa, xb])
            centre = both.mean(0)
            _, sing, vt = np.linalg.svd(both - centre, full_matrices=False)
            comps = vt[: min(2, len(vt))]
            explained = (sing**2 / max((sing**2).sum(), 1e-300))[: len(comps)]
            proj = [(m - centre) @ comps.T for m in (xa, xb)]
            if proj[0].shape[1] == 1:
                proj = [np.c_[p, np.zeros(len(p))] for p in proj]
                explained = np.r_[explained, 0.0]
            embed_points = (proj, explained)

    with atomic_dir(out, overwrite=overwrite) as tmp:
        fig_dir = tmp / "figures"
        fig_dir.mkdir()
        for s in sets:
            write_rows(tmp / f"descriptors_{_safe(s.name)}.csv", s.rows)
        write_stats_csv(tmp / "descriptor_stats.csv", stats_rows, names)
        figs = draw_figures(fig_dir, sets, keys, stats_rows, names, embed_points, multi) if figures else {}
        metrics = {
            "sets": {s.name: {"source": s.source, "sequences": len(s.sequences), "frames": len(s.rows)} for s in sets},
            "ndim": ndim,
            "descriptors": keys,
            "skipped_descriptors": skipped,
            "univariate": {r["descriptor"]: {k: v for k, v in r.items() if k != "descriptor"} for r in stats_rows},
            "multivariate": multi,
        }
        atomic_write_text(tmp / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n")
        write_report(tmp, sets, names, keys, skipped, stats_rows, multi, figs)
    logger.info("report written to %s", out)
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
