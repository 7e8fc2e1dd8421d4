"""``cellinr demo``: the main job end to end on the models bundled with the package.

For each bundled shape model (one per simulated cell behaviour): generate new time-evolving cells,
texture them into a 2D+t benchmark (CTC layout included), compare their shape descriptors with the
simulator's own samples of that behaviour, and draw an animated GIF and a PNG montage per sequence.
No download and no GPU needed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from cellinr.errors import ParameterError, RunError

log = logging.getLogger(__name__)

#: The bundled models that the demo runs by default: the simulator's behaviours, whose own samples are
#: the reference set of the shape comparison.
DEMO_KINDS = ("deforming", "dividing", "filopodial")


def demo(
    out: str | os.PathLike,
    *,
    sequences: int = 2,
    size: int | None = 64,
    frames: int | None = 10,
    kinds: Sequence[str] | None = None,
    reference_sequences: int = 4,
    texture: str = "render",
    seed: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
    verbose: bool = True,
) -> dict:
    """Run the demo and return a dict of what was written where.

    Parameters
    ----------
    out : output folder (built atomically; an existing one needs ``overwrite``)
    sequences : new sequences generated per behaviour
    size, frames : cube edge in voxels and time points of the generated sequences (default 64 and 10, about
        a minute on 2 CPU cores; None: each model's training grid and frame count, e.g. 128^3 x 20 for
        ``filopodial``, whose filopodia are 2-3 voxels thick there: about 10 minutes on 1 core)
    kinds : bundled shape models of the simulator's behaviours to use (default: all of them). Cells are
        drawn with each model's recommended sampler (its ``run.json`` ``generation`` entry).
    reference_sequences : simulator samples per behaviour for the descriptor comparison
    texture : "render" (the physics-style renderer, the default: the bundled GAN learned nuclei about
        23 px across and adds edge artefacts on 64 px images), "auto" (the bundled texture model when
        installed, else the renderer), a bundled texture model name ("dsb2018") or a model folder
    seed : random seed; the same seed gives the same files
    """
    from cellinr._util.atomic import atomic_dir
    from cellinr.benchmarking import benchmark
    from cellinr.data.simulation.phantoms import simulate
    from cellinr.generation.frontends import generate
    from cellinr.io.tiff import read_tiff
    from cellinr.measurement.comparison import compare
    from cellinr.model.run import load_run
    from cellinr.model.registry import (
        bundled_shape_models,
        bundled_texture_model,
        resolve_run,
    )
    from cellinr.visualize import mask_mips, write_gif, write_montage

    if sequences <= 0 or (size is not None and size < 16) or (frames is not None and frames <= 0) \
            or reference_sequences < 2:
        raise ParameterError(
            f"demo: need sequences > 0, size >= 16, frames > 0, reference_sequences >= 2 "
            f"(got {sequences}, {size}, {frames}, {reference_sequences})"
        )
    available = [k for k in bundled_shape_models() if k in DEMO_KINDS]
    kinds = list(kinds) if kinds else available
    if not kinds:
        raise RunError("demo: no bundled shape models are installed (cellinr/bundled/*/config.yaml)")
    unknown = [k for k in kinds if k not in available]
    if unknown:
        raise ParameterError(f"--kinds: no bundled model of a simulated behaviour named {', '.join(unknown)} "
                             f"(choose among {', '.join(available)})")
    if texture == "auto":
        model = bundled_texture_model()
        texture = str(model) if model is not None else "render"

    say = print if verbose else log.info
    start = time.perf_counter()
    out = Path(out)
    results: dict = {"out": str(out), "kinds": {}}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for k, kind in enumerate(kinds):
            t0 = time.perf_counter()
            gen_dir = tmp / "generated" / kind
            run = load_run(resolve_run(kind))
            grid = int(size) if size is not None else run.training_size
            n_frames = int(frames) if frames is not None else run.max_frames
            records = generate(
                run, gen_dir, n=sequences, size=grid, frames=n_frames, seed=seed + 101 * k, latent=None,
                formats=("tiff",), method="fast", device=device, prefix=f"{kind}_",
            )
            bench_dir = benchmark(gen_dir, tmp / "benchmark" / kind, texture=texture, seed=seed + k, device=device)
            sim_dir = simulate(
                tmp / "simulated" / kind, kind=kind, sequences=reference_sequences, frames=n_frames, size=grid,
                seed=seed + 1000 + k,
            )
            compare(sim_dir, gen_dir, tmp / "report" / kind, names=("simulated", "generated"))
            pictures = []
            for record in records:
                name = record["name"]
                masks = read_tiff(gen_dir / f"{name}.tif").data
                mips = mask_mips(masks)
                image = read_tiff(bench_dir / "sequences" / f"{name}_image.tif").data
                pictures.append(write_gif(tmp / "pictures" / f"{name}.gif", image, fps=4))
                pictures.append(
                    write_montage(
                        tmp / "pictures" / f"{name}_montage.png", [mips["XY"], mips["XZ"], image],
                        labels=["mask MIP (XY)", "mask MIP (XZ)", "textured"], title=f"{name}: generated by the {kind} model",
                    )
                )
            results["kinds"][kind] = {
                "generated": [r["name"] for r in records], "seconds": round(time.perf_counter() - t0, 1),
            }
            say(f"{kind}: {len(records)} sequences generated, textured and compared in "
                f"{time.perf_counter() - t0:.1f} s")
        # the folder was built under a temporary name: make the records name its final place
        for text_file in [*tmp.rglob("*.json"), *tmp.rglob("*.md"), *tmp.rglob("*.html")]:
            text = text_file.read_text(encoding="utf-8")
            if str(tmp) in text:
                text_file.write_text(text.replace(str(tmp), str(out.resolve())), encoding="utf-8")
    results["seconds"] = round(time.perf_counter() - start, 1)
    say(f"\nDemo finished in {results['seconds']:.1f} s. Outputs in {out}/:")
    say("  generated/<kind>/   new cells: (T, Z, Y, X) mask TIFFs and JSON records (latent, rotation, seed)")
    say("  benchmark/<kind>/   textured (image, mask) 2D+t TIFF pairs and the Cell Tracking Challenge layout (ctc/)")
    say("  report/<kind>/      descriptor comparison with the simulator's own samples (report.md, report.html, PNGs)")
    say("  simulated/<kind>/   the simulator samples used as the reference set")
    say("  pictures/           an animated GIF and a PNG montage per generated sequence")
    return results
