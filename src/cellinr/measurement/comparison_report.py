"""The files of a comparison report: statistics table, figures and the Markdown/HTML report (``cellinr compare``)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr.measurement.shape_sets import (
    PER_SEQUENCE,
    TRAJECTORY_POINTS,
    descriptor_samples,
    sequence_values,
)


def write_stats_csv(path: Path, stats_rows: list[dict], names: Sequence[str]) -> None:

    from cellinr._util.atomic import atomic_path

    cols = ["descriptor", "n_a", "mean_a", "sd_a", "n_b", "mean_b", "sd_b",
            "wasserstein", "wasserstein_sd", "ks_statistic", "ks_pvalue"]
    header = [c.replace("_a", f"_{names[0]}").replace("_b", f"_{names[1]}") if c.endswith(("_a", "_b")) else c
              for c in cols]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for r in stats_rows:
                w.writerow([r[c] for c in cols])


def draw_figures(fig_dir: Path, sets, keys, stats_rows, names, embed_points, multi) -> dict[str, str]:
    from cellinr.measurement import report as rp

    figures: dict[str, str] = {}
    by_key = {r["descriptor"]: r for r in stats_rows}
    values = {k: [descriptor_samples(s, k) for s in sets] for k in keys}
    titles = {
        k: f"{rp.label_of(k)}\nW1/sd={rp.format_number(by_key[k]['wasserstein_sd'], 2)}  "
           f"KS={rp.format_number(by_key[k]['ks_statistic'], 2)}"
        for k in keys
    }
    rp.distribution_grid(values, names, fig_dir / "distributions.png", titles=titles)
    figures["distributions"] = "figures/distributions.png"

    # time courses: only when some sequence has several frames
    time_keys = [k for k in keys if k not in PER_SEQUENCE]
    if any(sequence_values(s.rows, "n_frames").max(initial=1) > 1 for s in sets) and time_keys:
        n_bins = int(min(10, max(sequence_values(s.rows, "n_frames").max(initial=1) for s in sets)))
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        centres = 0.5 * (edges[:-1] + edges[1:])
        curves = {}
        moving = [sequence_values(s.rows, "n_frames").max(initial=1) > 1 for s in sets]
        legend = [nm if mv else f"{nm} (single frames, not shown)" for nm, mv in zip(names, moving)]
        for k in time_keys:
            per_set = []
            for s, mv in zip(sets, moving):
                t = sequence_values(s.rows, "time")
                v = sequence_values(s.rows, k) if mv else np.full(len(s.rows), np.nan)
                idx = np.clip(np.digitize(t, edges[1:-1]), 0, n_bins - 1)
                mean = np.full(n_bins, np.nan)
                sd = np.full(n_bins, np.nan)
                for b in range(n_bins):
                    sel = (idx == b) & np.isfinite(v)
                    if sel.any():
                        mean[b], sd[b] = v[sel].mean(), v[sel].std()
                per_set.append((centres, mean, sd))
            curves[k] = per_set
        rp.timecourse_grid(curves, legend, fig_dir / "timecourses.png")
        figures["timecourses"] = "figures/timecourses.png"

    if embed_points is not None:
        proj, explained = embed_points
        rp.embedding_plot(
            proj, names, fig_dir / "embedding.png",
            title=f"standardised descriptors, PCA; 1-NN accuracy {rp.format_number(multi.get('one_nn_accuracy'), 3)}",
            xlabel=f"PC 1 ({100 * explained[0]:.0f} % variance)", ylabel=f"PC 2 ({100 * explained[1]:.0f} % variance)",
        )
        figures["embedding"] = "figures/embedding.png"

    if any(s.examples for s in sets):
        rows = [[np.pad(img, 2) for _, img in s.examples] for s in sets]
        captions = [[name for name, _ in s.examples] for s in sets]
        labels = [s.name for s in sets]
        rp.image_grid(rows, fig_dir / "examples.png", row_labels=labels, captions=captions,
                      title="examples (middle frame, maximum-intensity projection along Z)")
        figures["examples"] = "figures/examples.png"
    return figures


def write_report(folder: Path, sets, names, keys, skipped, stats_rows, multi, figures) -> None:
    from cellinr.measurement.report import Report, format_number

    rep = Report(f"Shape comparison: {names[0]} vs {names[1]}")
    rep.paragraph(
        f"`{names[0]}`: {len(sets[0].sequences)} sequences, {len(sets[0].rows)} frames"
        + (f" from `{sets[0].source}`" if sets[0].source else "")
        + f". `{names[1]}`: {len(sets[1].sequences)} sequences, {len(sets[1].rows)} frames"
        + (f" from `{sets[1].source}`" if sets[1].source else "") + "."
    )
    rep.heading("Summary")
    fmt = lambda k: format_number(multi.get(k), 3)  # noqa: E731
    rep.table(
        ["score", "value", "ideal", "meaning"],
        [
            ["1-NN accuracy (frames, leave-one-sequence-out)", fmt("one_nn_accuracy"), "0.5",
             "0.5: sets indistinguishable; 1.0: fully separable"],
            ["1-NN accuracy (sequences)", fmt("one_nn_accuracy_sequences"), "0.5", "same, on whole trajectories"],
            [f"coverage of {names[0]} by {names[1]}", fmt("coverage"), "1",
             f"fraction of {names[0]} sequences that are some {names[1]} sequence's nearest match"],
            ["minimum matching distance", fmt("mmd"), "0",
             f"mean distance of each {names[0]} sequence to its closest {names[1]} sequence (sd units)"],
        ],
    )
    if any(isinstance(multi.get(k), float) and math.isnan(multi[k])
           for k in ("one_nn_accuracy", "one_nn_accuracy_sequences")):
        rep.paragraph("1-NN accuracy is undefined (–) when a set holds a single sequence: its frames have no "
                      "neighbour of their own set outside their sequence.")
    if multi.get("descriptors"):
        rep.paragraph(
            "Multivariate scores use standardised (pooled z-score) vectors of: "
            + ", ".join(f"`{k}`" for k in multi["descriptors"])
            + (f"; {multi['frames_dropped']} frames with missing values dropped."
               if multi.get("frames_dropped") else ".")
        )
    else:
        rep.paragraph("No descriptor varies across the sets, so no multivariate score was computed.")
    rep.heading("Per-descriptor statistics")
    rep.table(
        ["descriptor", f"{names[0]} mean ± sd", f"{names[1]} mean ± sd", "n", "W1", "W1 / sd", "KS", "KS p"],
        [
            [r["descriptor"], f"{format_number(r['mean_a'])} ± {format_number(r['sd_a'])}",
             f"{format_number(r['mean_b'])} ± {format_number(r['sd_b'])}", f"{r['n_a']} / {r['n_b']}",
             r["wasserstein"], r["wasserstein_sd"], r["ks_statistic"], r["ks_pvalue"]]
            for r in stats_rows
        ],
    )
    rep.paragraph(
        "W1: 1-Wasserstein distance in the descriptor's unit; W1 / sd: the same over the pooled standard "
        "deviation; KS: two-sample Kolmogorov-Smirnov statistic and p-value. Growth rates count one value per "
        "sequence, the shape change (1 - Dice of consecutive frames) one per frame pair, the rest one per frame."
    )
    if skipped:
        rep.paragraph("Skipped (no values in one of the sets): " + ", ".join(f"`{k}`" for k in skipped) + ".")
    captions = {
        "distributions": "Distributions per descriptor (violins, points, quartile bar and median).",
        "timecourses": "Time courses: mean ± sd over normalised time (0 = first frame, 1 = last frame).",
        "embedding": "First two principal components of the standardised frame descriptor vectors.",
        "examples": "Example masks of each set.",
    }
    rep.heading("Figures")
    for key, rel in figures.items():
        rep.image(rel, captions.get(key, key))
    rep.heading("Method")
    rep.paragraph(
        "Descriptors: `cellinr.measurement.descriptors` (voxel-count volume, smoothed marching-cubes surface, "
        "inertia-tensor axes, convex hull, Euler number, discrete mesh curvatures). Coverage and MMD follow "
        "Achlioptas et al. (2018) on per-sequence descriptor trajectories resampled to "
        f"{TRAJECTORY_POINTS} normalised time points (RMS over time of the Euclidean distance of standardised vectors)."
    )
    rep.write(folder)
