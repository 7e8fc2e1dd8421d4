"""Sine versus ReLU: train both activations at equal budget on one data set and compare reconstructions.

Both networks use the same preset (architecture, sampled points, epochs, learning rates) and seed;
only ``model.activation`` differs, so the parameter count and the training budget are equal. Each
training sequence is then reconstructed on the data set's own grid at its own frames (dense
evaluation, mask = SDF <= 0) and compared with the ground-truth mask (the data set's SDF <= 0):

- overlap: Dice, average symmetric surface distance and 95th-percentile Hausdorff distance
  (:mod:`cellinr.measurement.overlap`, microns from the data set's voxel size);
- protrusions (:mod:`cellinr.measurement.protrusions`, opening radius ``protrusion_radius_um``,
  default :data:`PROTRUSION_RADIUS_VOXELS` voxels): the thin-part Dice (mask minus its opening),
  the protrusion Dice (the thin part without the body's rims) and the number of protrusions.

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
from cellinr.measurement.protrusions import (
    count_protrusions,
    protrusion_dice,
    thin_part_dice,
)

logger = logging.getLogger(__name__)

METHODS = ("truth", "sine", "relu")
#: Written first into the output folder; a rerun with the same options resumes (reuses finished runs).
MARKER = "activations.json"
#: Default opening radius of the protrusion measures, in voxels of the data set.
PROTRUSION_RADIUS_VOXELS = 2


def reconstruct_masks(run, index: int, dims: tuple[int, int, int], frames: int, *, device="cpu") -> np.ndarray:
    """Masks (SDF <= 0) of training sequence ``index`` of a loaded run on a grid.

    Evaluated with the fast path, whose masks equal dense evaluation voxel for voxel.

    Returns
    -------
    (T, Z, Y, X) bool ndarray
    """
    import torch

    from cellinr.generation.frames import decode

    with torch.inference_mode():
        sdf = decode(run, run.codes[index], run.rotation_matrices[index], dims=tuple(dims), frames=int(frames),
                     device=device)
    return sdf <= 0


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
    protrusion_radius_um: float | None = None,
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
    protrusion_radius_um : opening radius of the protrusion measures (default: 2 voxels)

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
    from cellinr._util.outputs import check_no_overlap

    check_no_overlap([dataset.path], [out])
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
    sp = spacing or (1.0, 1.0, 1.0)
    radius_um = float(protrusion_radius_um) if protrusion_radius_um is not None else PROTRUSION_RADIUS_VOXELS * min(sp)
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
                   "protrusions_truth": count_protrusions(truth[t], radius_um=radius_um, spacing=sp)}
            for activation in ("sine", "relu"):
                m = overlap_metrics(truth[t], masks[activation][t], spacing)
                row[f"dice_{activation}"] = m["dice"]
                row[f"assd_um_{activation}"] = m["assd_um"]
                row[f"hd95_um_{activation}"] = m["hausdorff95_um"]
                row[f"protrusions_{activation}"] = count_protrusions(masks[activation][t], radius_um=radius_um,
                                                                     spacing=sp)
                row[f"thin_dice_{activation}"] = thin_part_dice(truth[t], masks[activation][t], radius_um=radius_um,
                                                                spacing=sp)
                row[f"protrusion_dice_{activation}"] = protrusion_dice(truth[t], masks[activation][t],
                                                                       radius_um=radius_um, spacing=sp)
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
            "thin_dice_mean": float(col("thin_dice").mean()),
            "protrusion_dice_mean": float(col("protrusion_dice").mean()),
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
         "thin-part Dice", "protrusion Dice", "protrusions (mean)", "protrusion count error", "final loss",
         "frames without ASSD"],
        [[s["activation"], s["parameters"], s["dice_mean"], s["dice_min"], s["assd_um_mean"], s["hd95_um_mean"],
          s["thin_dice_mean"], s["protrusion_dice_mean"], s["protrusions_mean"], s["protrusion_count_error"],
          s["final_loss"], s["frames_without_surface_distance"]]
         for s in summary],
    )
    rep.paragraph(
        f"Protrusions: the parts removed by an opening with a ball of radius {radius_um:.3g} um "
        "(cellinr.measurement.protrusions); thin-part Dice: Dice of mask minus opening; protrusion Dice: the same "
        "without the body's rims; protrusions are counted per skeleton end point, and the count error is the "
        "mean absolute difference to the ground truth per frame. ASSD and HD95 are means over the frames where the "
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


