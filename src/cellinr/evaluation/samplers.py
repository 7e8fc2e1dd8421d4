"""Which latent sampler makes realistic cells? Collapse, topology and realism of generated sequences.

For each sampler (:data:`cellinr.generation.samplers.LATENT_SAMPLERS`) ``n`` sequences are generated
from one run and scored:

- collapse: a frame collapses when it is empty or holds under :data:`COLLAPSE_FRACTION` of its
  sequence's largest volume (cells that vanish);
- topology: a sequence is monotone when its number of connected components (26-connectivity) never
  decreases over time (divisions do not fuse back, no fragments appear and vanish);
- realism: the balanced leave-one-sequence-out 1-nearest-neighbour accuracy between the generated
  sequences and a reference set of real or held-out sequences on the shape descriptors
  (:func:`cellinr.measurement.comparison.compare`; 0.5 means they cannot be told apart).

The best sampler has at most :data:`MAX_COLLAPSE` collapsed frames and the 1-NN accuracy nearest 0.5.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import ParameterError

#: A frame under this share of its sequence's largest volume has collapsed.
COLLAPSE_FRACTION = 0.2
#: The best sampler collapses at most this share of frames.
MAX_COLLAPSE = 0.01


def sequence_topology(masks: np.ndarray) -> dict:
    """Volumes, components per frame, collapsed frames and monotonicity of one (T, Z, Y, X) mask sequence."""
    from scipy import ndimage as ndi

    masks = np.asarray(masks) != 0
    volumes = masks.reshape(len(masks), -1).sum(axis=1)
    components = [int(ndi.label(m, structure=np.ones((3,) * m.ndim, bool))[1]) for m in masks]
    peak = max(int(volumes.max()), 1)
    collapsed = [bool(v == 0 or v < COLLAPSE_FRACTION * peak) for v in volumes]
    return {"volumes": volumes.tolist(), "components": components, "collapsed": collapsed,
            "monotone": bool(all(b >= a for a, b in zip(components, components[1:])))}


def folder_topology(folder: str | os.PathLike) -> dict:
    """:func:`sequence_topology` of every generated sequence in ``folder``, with the totals."""
    from cellinr.io.masks import mask_inputs
    from cellinr.io.sources import open_source

    per = {}
    for path in mask_inputs(folder):
        with open_source(path, ndim=None) as src:
            per[Path(path).stem] = sequence_topology(src.read_all_labels())
    frames = sum(len(p["collapsed"]) for p in per.values())
    return {
        "sequences": per,
        "collapsed_frame_fraction": sum(sum(p["collapsed"]) for p in per.values()) / max(frames, 1),
        "monotone_fraction": float(np.mean([p["monotone"] for p in per.values()])) if per else float("nan"),
        "empty_sequences": int(sum(max(p["volumes"]) == 0 for p in per.values())),
    }


def compare_samplers(
    run,
    reference: str | os.PathLike,
    out: str | os.PathLike,
    *,
    samplers: Sequence[str] | None = None,
    sigmas: dict | None = None,
    n: int = 20,
    size: int | None = None,
    frames: int | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
) -> list[dict]:
    """Generate ``n`` sequences per sampler from ``run`` and score them against ``reference`` masks.

    Parameters
    ----------
    run : run folder, bundled model name or loaded Run
    reference : masks of real or held-out sequences (any input of :func:`cellinr.measure`)
    out : folder: ``<sampler>/`` generated sequences, ``report_<sampler>/`` comparisons, ``samplers.json``
    samplers : default all; ``sigmas`` optional per-sampler ``sigma``
    n, size, frames, seed, device : as in :func:`cellinr.generate`

    Returns
    -------
    list of dict, one per sampler: collapsed-frame fraction, monotone fraction, 1-NN accuracy, and
    ``best`` (True for the recommended one).
    """
    from cellinr._util.atomic import atomic_write_text
    from cellinr._util.jsonsafe import file_header, json_safe
    from cellinr.generation.frames import load_for_evaluation
    from cellinr.generation.frontends import generate
    from cellinr.generation.samplers import LATENT_SAMPLERS
    from cellinr.measurement.comparison import compare

    samplers = list(samplers or LATENT_SAMPLERS)
    unknown = [s for s in samplers if s not in LATENT_SAMPLERS]
    if unknown:
        raise ParameterError(f"samplers: unknown {', '.join(unknown)}; choose from {', '.join(LATENT_SAMPLERS)}")
    out = Path(out)
    run, _ = load_for_evaluation(run, device)
    rows = []
    for sampler in samplers:
        sigma = (sigmas or {}).get(sampler)
        folder = out / sampler
        generate(run, folder, n=n, size=size, frames=frames, seed=seed, latent=sampler, sigma=sigma,
                 device=device, overwrite=overwrite)
        topo = folder_topology(folder)
        row = {"sampler": sampler, "sigma": sigma, "n": n,
               "collapsed_frame_fraction": topo["collapsed_frame_fraction"],
               "monotone_fraction": topo["monotone_fraction"], "empty_sequences": topo["empty_sequences"],
               "one_nn_accuracy": float("nan")}
        if topo["empty_sequences"] < n:
            report = compare(reference, folder, out / f"report_{sampler}", names=("reference", sampler),
                             figures=False, overwrite=True, timing="physical")
            metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
            row["one_nn_accuracy"] = (metrics.get("multivariate") or {}).get("one_nn_accuracy", float("nan"))
        rows.append(row)
    usable = [r for r in rows if r["collapsed_frame_fraction"] <= MAX_COLLAPSE and np.isfinite(r["one_nn_accuracy"])]
    pool = usable or [r for r in rows if np.isfinite(r["one_nn_accuracy"])] or rows
    best = min(pool, key=lambda r: (abs(r["one_nn_accuracy"] - 0.5) if np.isfinite(r["one_nn_accuracy"]) else 1.0,
                                    r["collapsed_frame_fraction"]))
    for r in rows:
        r["best"] = r is best
    atomic_write_text(out / "samplers.json", json.dumps(json_safe({**file_header("cellinr-sampler-comparison"),
                                                                    "run": str(getattr(run, "path", "")),
                                                                    "reference": str(reference), "rows": rows}),
                                                          indent=1))
    return rows
