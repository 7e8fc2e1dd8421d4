"""Sample data: one new time-evolving cell from each bundled shape model (napari File > Open Sample)."""

from __future__ import annotations

from cellinr.napari._layers import SAMPLE_SIZE, generated_layer


def sample_cell(model: str, *, seed: int = 0, size: int = SAMPLE_SIZE) -> list:
    """A generated cell of bundled model ``model`` with the sampler the model recommends."""
    return [generated_layer(model, seed=seed, size=size)]


def deforming() -> list:
    return sample_cell("deforming")


def dividing() -> list:
    return sample_cell("dividing")


def filopodial() -> list:
    return sample_cell("filopodial")


def platynereis() -> list:
    return sample_cell("platynereis")
