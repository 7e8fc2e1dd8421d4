"""``cellinr overlap``: Dice, Jaccard and surface distances between two mask sets, per frame and overall."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite, add_spacing, positive_float
from cellinr.measurement.protrusions import PROTRUSION_RADIUS_UM


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "overlap",
        help="overlap of two mask sets: Dice, Jaccard, Hausdorff, HD95, ASSD per frame and summary",
        description="Compare two masks or mask sequences voxel by voxel (foreground = any label > 0; SDF files: "
        "SDF <= 0): per frame Dice, Jaccard, Hausdorff distance, its 95th percentile (HD95) and the average "
        "symmetric surface distance (ASSD), in voxels and microns, and their mean/std/min/median/max. Two "
        "folders are matched by sequence name (e.g. reconstruct output against the training masks).",
    )
    parser.add_argument("a", metavar="A", help="mask file (TIFF, HDF5, .npy/.npz), per-frame folder or folder of them")
    parser.add_argument("b", metavar="B", help="the masks to compare with A (same grid)")
    parser.add_argument("--out", metavar="CSV", help="write the per-frame table (and CSV.json with the summary)")
    add_spacing(parser, " (applies to both)")
    parser.add_argument("--axes", help="stored axes of the inputs if their metadata is missing, e.g. TZYX")
    parser.add_argument("--dataset", metavar="NAME", help="HDF5 dataset or .npz array name")
    parser.add_argument("--protrusion-radius", type=positive_float, default=PROTRUSION_RADIUS_UM, metavar="UM",
                        help="opening radius (microns) of the thin-part and protrusion Dice "
                        f"(default: {PROTRUSION_RADIUS_UM})")
    parser.add_argument("--quiet", action="store_true", help="print only the summary, not every frame")
    add_overwrite(parser)
    parser.set_defaults(func=run)


_COLUMNS = (("dice", "Dice", "{:.4f}"), ("jaccard", "Jaccard", "{:.4f}"), ("hausdorff_vox", "HD vox", "{:.3g}"),
            ("hausdorff95_vox", "HD95 vox", "{:.3g}"), ("assd_vox", "ASSD vox", "{:.3g}"),
            ("hausdorff_um", "HD um", "{:.3g}"), ("hausdorff95_um", "HD95 um", "{:.3g}"),
            ("assd_um", "ASSD um", "{:.3g}"), ("thin_part_dice", "thin Dice", "{:.4f}"),
            ("protrusion_dice", "protr Dice", "{:.4f}"))


def run(args: argparse.Namespace) -> int:
    import csv
    import json
    from pathlib import Path

    from cellinr._util.atomic import atomic_path, atomic_write_text
    from cellinr._util.jsonsafe import json_safe
    from cellinr._util.outputs import check_new_output, check_no_overlap
    from cellinr.measurement.overlap import OVERLAP_KEYS, THIN_KEYS, compare_masks

    out = Path(args.out) if args.out else None
    if out is not None:
        check_no_overlap([args.a, args.b], [out, out.with_name(out.name + ".json")], flag="--out")
        check_new_output(out, overwrite=args.overwrite)
    rows, summary = compare_masks(args.a, args.b, spacing=args.spacing, axes=args.axes, dataset=args.dataset,
                                  protrusion_radius_um=args.protrusion_radius)
    width = max(len("sequence"), *(len(r["sequence"]) for r in rows))
    header = f"{'sequence':<{width}}  {'frame':>5}  " + "  ".join(f"{title:>9}" for _, title, _ in _COLUMNS)
    if not args.quiet:
        print(header)
        for r in rows:
            print(f"{r['sequence']:<{width}}  {r['frame']:>5}  "
                  + "  ".join(f"{fmt.format(r[k]):>9}" for k, _, fmt in _COLUMNS))
    sp = summary["spacing_um"]
    print(f"summary over {summary['frames']} frames of {len(summary['sequences'])} sequences"
          + (f" (voxel {' x '.join(f'{s:.4g}' for s in sp)} um)" if sp else "")
          + (f", {summary['frames_one_empty']} frames with one mask empty (distances left out)"
             if summary["frames_one_empty"] else "") + ":")
    print(f"{'':<{width}}  {'':>5}  " + "  ".join(f"{title:>9}" for _, title, _ in _COLUMNS))
    for stat in ("mean", "std", "min", "median", "max"):
        print(f"{stat:<{width}}  {'':>5}  "
              + "  ".join(f"{fmt.format(summary[k][stat]):>9}" for k, _, fmt in _COLUMNS))
    if out is not None:
        with atomic_path(out) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=["sequence", "frame", *OVERLAP_KEYS, *THIN_KEYS])
                writer.writeheader()
                writer.writerows(rows)
        atomic_write_text(out.with_name(out.name + ".json"),
                          json.dumps(json_safe({"a": str(args.a), "b": str(args.b), **summary}), indent=1))
        print(f"per-frame table: {out}")
    return 0
