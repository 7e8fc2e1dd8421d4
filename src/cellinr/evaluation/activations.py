"""Sine versus ReLU: train both activations at equal budget on one data set and compare reconstructions.

Both networks use the same preset (architecture, sampled points, epochs, learning rates) and seed;
only ``model.activation`` differs, so the parameter count and the training budget are equal. Each
training sequence is then reconstructed on the data set's own grid at its own frames (dense
evaluation, mask = SDF <= 0) and compared with the ground-truth mask (the data set's SDF <= 0):

- overlap: Dice, average symmetric surface distance and 95th-percentile Hausdorff distance
  (:mod:`cellinr.measurement.overlap`, microns from the data set's voxel size);
- protrusions: the number of thin protrusions (e.g. filopodia): skeleton end points in the parts of
  the mask that vanish under a morphological opening with a ball of radius
  :data:`PROTRUSION_RADIUS` voxels and reach at least :data:`PROTRUSION_MIN_LENGTH` voxels out of it
  (see :func:`count_protrusions`); a smooth cell body counts 0. On simulated filopodial cells at
  48^3 it finds 0/5/7/9 of the simulator's 0/5/12/12 protrusions (short ones are below resolution).

Outputs in ``OUT``: ``runs/sine`` and ``runs/relu`` (the two trained run folders), ``figure.png``
(maximum-intensity projections over time: ground truth | sine | ReLU per sequence), ``table.csv``
(per sequence and frame), ``summary.csv``, ``report.md`` / ``report.html`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from cellinr._util.jsonsafe import json_safe
from cellinr.errors import ParameterError

logger = logging.getLogger(__name__)

#: Opening radius (voxels) that separates thin protrusions from the cell body.
PROTRUSION_RADIUS = 2
#: Removed parts reaching less far (voxels) out of the opened body are surface roughness.
PROTRUSION_MIN_LENGTH = 3
METHODS = ("truth", "sine", "relu")
#: Written first into the output folder; a rerun with the same options resumes (reuses finished runs).
MARKER = "activations.json"


def count_protrusions(mask: np.ndarray, *, radius: int = PROTRUSION_RADIUS,
                      min_length: int = PROTRUSION_MIN_LENGTH) -> int:
    """Number of thin protrusions (e.g. filopodia) of a 3D mask, from skeleton end points.

    The cell body is the morphological opening of the mask with a ball of radius ``radius``; the
    removed voxels fall into connected parts (26-connectivity). A part that reaches at least
    ``min_length`` voxels out of the body (Euclidean distance) holds one or more protrusions: it counts
    as many as the end points of the mask's skeleton (:func:`skimage.morphology.skeletonize`) that it
    holds at least ``min_length`` voxels out of the body (branched filopodia count per tip), and at
    least one (thinning can drop the branch of a short, even-width rod). Parts closer to the body are
    surface roughness (a voxelised smooth surface loses rims and corners under the opening).

    Parameters
    ----------
    mask : (Z, Y, X) bool ndarray
    radius : opening ball radius in voxels; parts thinner than about 2 * radius count as protrusions
    min_length : parts and tips reaching less far out of the body (voxels) are ignored

    Returns
    -------
    int
    """
    from scipy import ndimage as ndi
    from skimage.morphology import ball, skeletonize

    mask = np.asarray(mask) != 0
    if not mask.any():
        return 0
    coords = np.argwhere(mask)
    lo = coords.min(0)
    hi = coords.max(0) + 1
    crop = np.pad(mask[tuple(slice(a, b) for a, b in zip(lo, hi))], radius + 1)
    body = ndi.binary_opening(crop, structure=ball(radius).astype(bool))
    parts, n = ndi.label(crop & ~body, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return 0
    if not body.any():  # all thin: a lone rod or sheet counts once
        return 1
    dist = ndi.distance_transform_edt(~body)
    reach = np.asarray(ndi.maximum(dist, parts, index=np.arange(1, n + 1)))
    skeleton = skeletonize(crop) > 0
    neighbours = ndi.convolve(skeleton.astype(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant") - 1
    tips = skeleton & (neighbours == 1) & (dist >= min_length)
    tips_per_part = np.bincount(parts[tips], minlength=n + 1)[1:]
    return int(np.where(reach >= min_length, np.maximum(tips_per_part, 1), 0).sum())


def reconstruct_masks(run, index: int, dims: tuple[int, int, int], frames: int, *, device="cpu") -> np.ndarray:
    """Masks (SDF <= 0) of training sequence ``index`` of a loaded run on a dense grid.

    Returns
    -------
    (T, Z, Y, X) bool ndarray
    """
    import torch

    from cellinr.geometry.grid import evaluate_dense, time_coords

    out = np.empty((frames, *dims), bool)
    with torch.inference_mode():
        field = run.field(index)
        for k, t in enumerate(time_coords(frames)):
            out[k] = evaluate_dense(field, dims, t=float(t), device=device).sdf <= 0
    return out


def compare_activations(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str = "small",
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    sequences: int | None = 4,
    max_frames: int = 8,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Train a sine and a ReLU network at equal budget on one data set and compare their reconstructions.

    Parameters
    ----------
    dataset_dir : a prepared SDF data set
    out : output folder (created). A rerun with the same options reuses the finished runs in it (e.g.
        after an interruption, or to re-evaluate); anything else there needs ``overwrite``, which also
        retrains both networks.
    preset, epochs, seed : training settings shared by both networks
    device : ``auto``, ``cpu``, ``cuda`` or ``mps``
    sequences : evaluate the first this many sequences (None: all)
    max_frames : frames shown per sequence in the figure (evenly spaced; all frames are measured)

    Returns
    -------
    Path
        ``out``.
    """
    from cellinr._util.atomic import atomic_write_text, check_output_dir
    from cellinr._util.device import resolve_device
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.measurement import report as rp
    from cellinr.measurement.overlap import overlap_metrics
    from cellinr.model.run import load_run
    from cellinr.training.shape import train

    if sequences is not None and sequences < 1:
        raise ParameterError(f"sequences: must be at least 1, got {sequences}")
    if max_frames < 1:
        raise ParameterError(f"max_frames: must be at least 1, got {max_frames}")
    dataset = SDFDataset(dataset_dir)
    out = Path(out)
    # resumable: a rerun with the same options reuses finished runs; other options need --overwrite
    options = {"dataset": str(dataset.path.resolve()), "preset": preset, "epochs": epochs, "seed": seed}
    marker = out / MARKER
    if marker.is_file() and not overwrite:
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != options:
            from cellinr.errors import OutputExistsError

            raise OutputExistsError(f"{out}: holds a comparison with other options; pass --overwrite to replace it")
    check_output_dir(out, overwrite=overwrite, marker=MARKER)
    atomic_write_text(marker, json.dumps(options, indent=2) + "\n")
    dev = resolve_device(device)
    runs = {}
    for activation in ("sine", "relu"):
        run_dir = out / "runs" / activation
        if not overwrite and (run_dir / "run.json").is_file():
            logger.info("reusing the finished %s run in %s", activation, run_dir)
        else:
            logger.info("training the %s network", activation)
            train(dataset.path, run_dir, preset=preset, epochs=epochs, activation=activation,
                  device=str(dev), seed=seed, overwrite=True, progress=progress)
        runs[activation] = load_run(run_dir, device=dev)

    voxel = dataset.voxel_size_um
    spacing = (float(voxel),) * 3 if isinstance(voxel, (int, float)) else (tuple(voxel) if voxel else None)
    n_eval = len(dataset) if sequences is None else min(sequences, len(dataset))
    rows: list[dict] = []
    figure_rows: list[list[np.ndarray]] = []
    row_labels: list[str] = []
    col_labels: list[str] = []
    from cellinr._util.progress import tqdm

    for i in tqdm(range(n_eval), desc="evaluating", disable=None if progress is None else not progress):
        info = dataset.sequences[i]
        truth = np.stack([f <= 0 for f in dataset.iter_frames(i)])
        dims = tuple(int(s) for s in truth.shape[1:])
        masks = {"truth": truth}
        for activation, run in runs.items():
            j = run.names.index(info.name) if info.name in run.names else i
            masks[activation] = reconstruct_masks(run, j, dims, len(truth), device=dev)
        for t in range(len(truth)):
            row = {"sequence": info.name, "frame": t,
                   "protrusions_truth": count_protrusions(truth[t])}
            for activation in ("sine", "relu"):
                m = overlap_metrics(truth[t], masks[activation][t], spacing)
                row[f"dice_{activation}"] = m["dice"]
                row[f"assd_um_{activation}"] = m["assd_um"]
                row[f"hd95_um_{activation}"] = m["hausdorff95_um"]
                row[f"protrusions_{activation}"] = count_protrusions(masks[activation][t])
            rows.append(row)
        shown = np.unique(np.linspace(0, len(truth) - 1, min(max_frames, len(truth))).round().astype(int))
        if not col_labels or len(shown) > len(col_labels):
            col_labels = [f"frame {k}" for k in shown]
        for method, label in (("truth", "ground truth"), ("sine", "sine"), ("relu", "ReLU")):
            figure_rows.append([masks[method][k].max(axis=0) for k in shown])
            row_labels.append(f"{info.name}\n{label}" if method == "truth" else label)

    summary = []
    for activation in ("sine", "relu"):
        def col(key, act=activation):
            v = np.array([r[f"{key}_{act}"] for r in rows], float)
            return v[np.isfinite(v)]
        err = np.array([abs(r[f"protrusions_{activation}"] - r["protrusions_truth"]) for r in rows], float)
        summary.append({
            "activation": activation,
            "parameters": int(sum(p.numel() for p in runs[activation].decoder.parameters())),
            "dice_mean": float(col("dice").mean()), "dice_min": float(col("dice").min()),
            "assd_um_mean": float(col("assd_um").mean()) if len(col("assd_um")) else float("nan"),
            "hd95_um_mean": float(col("hd95_um").mean()) if len(col("hd95_um")) else float("nan"),
            "protrusions_mean": float(np.mean([r[f"protrusions_{activation}"] for r in rows])),
            "protrusion_count_error": float(err.mean()),
            "final_loss": _final_loss(out / "runs" / activation),
            # surface distances are undefined (infinite) where a reconstruction is empty: count those
            # frames, so that means over the other frames do not flatter a failing network
            "frames_without_surface_distance": int(sum(not np.isfinite(r[f"assd_um_{activation}"]) for r in rows)),
        })
    truth_protrusions = float(np.mean([r["protrusions_truth"] for r in rows]))

    rp.image_grid(figure_rows, out / "figure.png", row_labels=row_labels, col_labels=col_labels, cell=1.5,
                  title="maximum-intensity projections over time: ground truth | sine | ReLU")
    from cellinr.measurement.tables import write_rows

    write_rows(out / "table.csv", rows)
    _write_csv(out / "summary.csv", summary)
    unit = "µm" if spacing else "voxels"
    metrics = {"dataset": str(dataset.path), "preset": preset, "epochs": epochs, "seed": seed,
               "sequences": n_eval, "spacing_um": spacing, "truth_protrusions_mean": truth_protrusions,
               "summary": summary}
    atomic_write_text(out / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n")

    rep = rp.Report("Sine vs ReLU activation at equal budget")
    rep.paragraph(
        f"Data set `{dataset.path}`; both networks trained with preset `{preset}`"
        + (f", {epochs} epochs" if epochs else "") + f", seed {seed}; {n_eval} sequences evaluated on their own "
        f"grid and frames ({len(rows)} frames). Mean ground-truth protrusion count: {truth_protrusions:.2f}."
    )
    rep.table(
        ["activation", "parameters", "Dice (mean)", "Dice (min)", f"ASSD [{unit}]", f"HD95 [{unit}]",
         "protrusions (mean)", "protrusion count error", "final loss", "frames without ASSD"],
        [[s["activation"], s["parameters"], s["dice_mean"], s["dice_min"], s["assd_um_mean"], s["hd95_um_mean"],
          s["protrusions_mean"], s["protrusion_count_error"], s["final_loss"], s["frames_without_surface_distance"]]
         for s in summary],
    )
    rep.paragraph(
        "Protrusions: tips of the parts removed by an opening with a ball of radius "
        f"{PROTRUSION_RADIUS} voxels and reaching at least {PROTRUSION_MIN_LENGTH} voxels out of the opened body, "
        "counted per skeleton end point; the count error is the "
        "mean absolute "
        "difference to the ground truth per frame. ASSD and HD95 are means over the frames where the "
        "reconstruction and the ground truth both have a surface (`frames without ASSD` counts the others, "
        "e.g. empty reconstructions). Per-frame values are in `table.csv`."
    )
    rep.image("figure.png", "Maximum-intensity projections over time: ground truth, sine and ReLU reconstructions.")
    rep.write(out)
    return out


def _final_loss(run_dir: Path) -> float:
    import csv

    log = run_dir / "log.csv"
    if not log.is_file():
        return float("nan")
    with open(log, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for key in ("l1", "loss"):
        if rows and key in rows[-1]:
            try:
                return float(rows[-1][key])
            except ValueError:
                return float("nan")
    return float("nan")


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    from cellinr._util.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


