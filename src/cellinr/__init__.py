"""cellinr: generative modelling of living cells in 3D+time with implicit neural representations.

Implements and extends Wiesner et al., "Generative modeling of living cells with SO(3)-equivariant
implicit neural representations" (Medical Image Analysis, 2024) and "Implicit Neural Representations
for Generative Modeling of Living Cell Shapes" (MICCAI 2022).

The public API mirrors the command line; functions are imported lazily so ``import cellinr`` is fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "prepare": "cellinr.data.preparation:prepare",
    "describe": "cellinr.summary:describe",
    "open_source": "cellinr.io.sources:open_source",
    "simulate": "cellinr.data.simulation:simulate",
    "simulate_sequence": "cellinr.data.simulation:simulate_sequence",
    "train": "cellinr.training.shape:train",
    "load_run": "cellinr.model.run:load_run",
    "import_reference": "cellinr.model.reference:import_reference",
    "apply_fit": "cellinr.model.run:apply_fit",
    "reconstruct": "cellinr.generation.frontends:reconstruct",
    "generate": "cellinr.generation.frontends:generate",
    "sample_cell": "cellinr.generation.frontends:sample_cell",
    "fit": "cellinr.training.fitting:fit",
    "interpolate": "cellinr.generation.frontends:interpolate",
    "decode": "cellinr.generation.frames:decode",
    "train_texture": "cellinr.training.texture:train_texture",
    "load_texture_model": "cellinr.texture.apply:load_texture_model",
    "apply_texture": "cellinr.texture.apply:apply_texture",
    "render": "cellinr.texture.renderer:render",
    "render_masks": "cellinr.texture.renderer:render_masks",
    "estimate_render_params": "cellinr.texture.renderer:estimate_render_params",
    "benchmark": "cellinr.benchmarking:benchmark",
    "scene": "cellinr.scenes.frontend:scene",
    "dataset_quality": "cellinr.scenes.quality:dataset_quality",
    "scene_difficulty": "cellinr.scenes.difficulty:scene_difficulty",
    "measure": "cellinr.measurement.tables:measure",
    "compare": "cellinr.measurement.comparison:compare",
    "compare_masks": "cellinr.measurement.overlap:compare_masks",
    "compare_activations": "cellinr.evaluation.activations:compare_activations",
    "rotation_report": "cellinr.evaluation.rotations:rotation_report",
    "demo": "cellinr.demonstration:demo",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name].split(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cellinr' has no attribute {name!r}")
