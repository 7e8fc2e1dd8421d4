"""Atomic output (kept for its importers): the implementation is :mod:`cellinr._util.outputs`."""

from __future__ import annotations

from cellinr._util.outputs import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
)

__all__ = ["atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output_dir"]
