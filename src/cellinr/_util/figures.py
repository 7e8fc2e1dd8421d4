"""Matplotlib figures without pyplot: the library never selects a backend or keeps global figure state."""

from __future__ import annotations

import os
from pathlib import Path


def new_figure(figsize: tuple[float, float], *, dpi: float = 100):
    """A :class:`matplotlib.figure.Figure` with its own Agg canvas (not registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], dpi: float = 100, squeeze: bool = True, **kw):
    """``(fig, axes)`` like ``pyplot.subplots``, on a :func:`new_figure`."""
    fig = new_figure(figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **kw)


def save_png(fig, path: str | os.PathLike, *, dpi: float | None = None, **kw) -> Path:
    """Write ``fig`` as PNG atomically."""
    from cellinr._util.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi if dpi is not None else fig.dpi, **kw)
    return path
