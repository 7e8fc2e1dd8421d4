"""Package a trained run folder as a bundled shape model (``src/cellinr/bundled/<name>/``).

Copies the run's files (not its checkpoints), measures the reconstruction Dice against the data set
it was trained on (every frame, on the data set's grid), records the sampler that
``bench/bench_fidelity.py --parts samplers`` recommends (``run.json`` key ``generation``) and writes a
README with the provenance, the command that trained the run and the measured quality.

    python scripts/bundle_model.py --name filopodial --run RUN --data DATASET \\
        --what "8 simulated filopodial sequences x 20 frames at 128^3" \\
        --provenance "procedural phantoms from cellinr.data.simulation (no external data)" \\
        --command "python bench/bench_fidelity.py --parts filopodial" [--samplers SAMPLERS.json] [--extra TEXT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("config.yaml", "model.safetensors", "latents.safetensors", "run.json", "manifest.json", "log.csv",
             "loss.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the prepared data set the run was trained on")
    p.add_argument("--what", required=True, help="what the model was trained on (one line)")
    p.add_argument("--provenance", required=True, help="data source and licence (one line)")
    p.add_argument("--command", required=True, help="the command that trained the run")
    p.add_argument("--samplers", type=Path, help="samplers.json of evaluation.samplers.compare_samplers")
    p.add_argument("--extra", default="", help="more README text (e.g. fit results)")
    p.add_argument("--scores", type=Path,
                   help="a bench_fidelity part JSON that measured this run on the same data set (key --scores-key): "
                   "take its mean and minimum Dice instead of measuring again")
    p.add_argument("--scores-key", help="key of the run in --scores, e.g. new or dividing/new")
    p.add_argument("--dest", type=Path, default=ROOT / "src/cellinr/bundled")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from cellinr.generation.frames import decode, load_for_evaluation
    from cellinr.geometry.regions import dice
    from cellinr.io.sdf_dataset import SDFDataset

    torch.set_num_threads(2)
    run, _ = load_for_evaluation(args.run, "cpu")
    ds = SDFDataset(args.data)
    scores = []
    measured = None
    if args.scores is not None:  # measured by bench_fidelity's evaluate on the same run and data set
        row = json.loads(args.scores.read_text())[args.scores_key]
        measured = (float(row["dice"]), float(row["dice_min"]))
        scores = [measured[0]]
    with torch.inference_mode():
        for i, info in enumerate(ds.sequences if not scores else []):
            j = run.names.index(info.name)
            truth = np.stack([f <= 0 for f in ds.iter_frames(i)])
            sdf = decode(run, run.codes[j], run.rotation_matrices[j], dims=truth.shape[1:], frames=len(truth),
                         device="cpu")
            scores += [dice(truth[t], sdf[t] <= 0) for t in range(len(truth))]
    scores = np.asarray(scores)
    n_frames = sum(s.frames for s in ds.sequences)
    mean, low = measured if measured else (float(scores.mean()), float(scores.min()))
    dest = args.dest / args.name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in RUN_FILES:
        if (args.run / name).exists():
            shutil.copy2(args.run / name, dest / name)
    record = json.loads((dest / "run.json").read_text())
    generation = ""
    if args.samplers is not None:
        rows = json.loads(args.samplers.read_text())["rows"]
        best = next(r for r in rows if r.get("best"))
        record["generation"] = {"latent": best["sampler"], "sigma": best.get("sigma"),
                                "chosen_by": "bench/bench_fidelity.py --parts samplers",
                                "collapsed_frame_fraction": best["collapsed_frame_fraction"],
                                "monotone_fraction": best["monotone_fraction"],
                                "one_nn_accuracy": best["one_nn_accuracy"]}
        table = "\n".join(f"| {r['sampler']} | {r['collapsed_frame_fraction']:.3f} | {r['monotone_fraction']:.2f} | "
                          f"{r['one_nn_accuracy']:.3f} |" for r in rows)
        generation = (f"\n## Generation\n\nThe default sampler of this model is `{best['sampler']}` (`cellinr generate "
                      f"--model {args.name}` uses it unless `--latent` is given), chosen among the samplers by the "
                      "share of collapsed frames (empty, or under 20 % of the sequence's largest volume), the share "
                      "of sequences whose number of components never decreases, and the 1-nearest-neighbour accuracy "
                      "of generated against held-out sequences on the shape descriptors (0.5: indistinguishable):\n\n"
                      "| sampler | collapsed frames | monotone sequences | 1-NN accuracy |\n|---|---|---|---|\n"
                      f"{table}\n")
    (dest / "run.json").write_text(json.dumps(record, indent=2))
    size = list(ds.sequences[0].shape)
    (dest / "training.json").write_text(json.dumps({
        "name": args.name, "dice_mean": mean, "dice_min": low,
        "frames_evaluated": int(n_frames), "grid": size, "command": args.command,
        "sequences": len(ds), "preset": run.config.preset, "epochs": record.get("epochs"),
        "precision": record.get("precision")}, indent=2) + "\n")
    (dest / "README.md").write_text(
        f"# Bundled shape model `{args.name}`\n\n"
        f"A `{run.config.preset}`-preset SIREN auto-decoder ({run.config.model.activation}, "
        f"{sum(p.numel() for p in run.decoder.parameters()):,} parameters, {run.config.model.latent_dim}-d codes) "
        f"trained on {args.what}.\n\n"
        f"- Data provenance: {args.provenance}.\n"
        f"- Training: `{args.command}` ({record.get('epochs')} epochs, precision {record.get('precision', 'fp32')}).\n"
        f"- Reconstruction Dice against the training masks ({n_frames} frames on the {size[0]}x{size[1]}x{size[2]} "
        f"grid): mean {mean:.4f}, minimum {low:.4f}.\n"
        + (f"{args.extra}\n" if args.extra else "")
        + generation
        + f"\nLoad it by name: `cellinr generate --model {args.name} --out OUT --n 5`, or `cellinr.load_run` on this folder.\n")
    print(json.dumps({"name": args.name, "dice_mean": mean, "dice_min": low}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
