"""Procedural 3D+t cell-shape phantoms with known ground truth (``cellinr simulate``); see :mod:`.phantoms`."""

from cellinr.data.simulation.phantoms import (
    CUBE_UM,
    KINDS,
    SimulatedSequence,
    simulate,
    simulate_sequence,
)

__all__ = ["CUBE_UM", "KINDS", "SimulatedSequence", "simulate", "simulate_sequence"]
