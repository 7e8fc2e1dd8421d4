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
    "prepare": "cellinr.data.prepare:prepare",
    "describe": "cellinr.io.readers:describe",
    "open_source": "cellinr.io.readers:open_source",
    "simulate": "cellinr.data.simulate:simulate",
    "simulate_sequence": "cellinr.data.simulate:simulate_sequence",
    "train": "cellinr.train.shape:train",
    "load_run": "cellinr.io.run:load_run",
    "import_reference": "cellinr.io.reference:import_reference",
    "reconstruct": "cellinr.generate:reconstruct",
    "generate": "cellinr.generate:generate",
    "fit": "cellinr.generate:fit",
    "interpolate": "cellinr.generate:interpolate",
    "train_texture": "cellinr.train.texture:train_texture",
    "load_texture_model": "cellinr.texture.apply:load_texture_model",
    "apply_texture": "cellinr.texture.apply:apply_texture",
    "render": "cellinr.texture.render:render",
    "render_masks": "cellinr.texture.render:render_masks",
    "estimate_render_params": "cellinr.texture.render:estimate_render_params",
    "benchmark": "cellinr.benchmark:benchmark",
    "measure": "cellinr.measure.descriptors:measure",
    "compare": "cellinr.measure.compare:compare",
    "compare_activations": "cellinr.measure.activations:compare_activations",
    "rotation_report": "cellinr.measure.rotation:rotation_report",
    "demo": "cellinr.demo:demo",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name].split(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cellinr' has no attribute {name!r}")
