"""Plotting and report-writing helpers (matplotlib with the Agg backend; Markdown and HTML).

All figure functions take plain arrays and a path, write a PNG atomically and return the path.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cellinr._util.figures import subplots

#: Colours of the two compared sets (colour-blind safe pair) and of further sets.
SET_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")

#: Short axis labels for known descriptors (unit in brackets).
LABELS = {
    "volume_um3": "volume [µm³]",
    "surface_area_um2": "surface area [µm²]",
    "sphericity": "sphericity",
    "equivalent_diameter_um": "equiv. diameter [µm]",
    "major_axis_um": "major axis [µm]",
    "intermediate_axis_um": "intermediate axis [µm]",
    "minor_axis_um": "minor axis [µm]",
    "elongation": "elongation",
    "flatness": "flatness",
    "extent": "extent",
    "solidity": "solidity",
    "n_components": "components",
    "euler_characteristic": "Euler characteristic",
    "mean_curvature_mean_per_um": "mean H [1/µm]",
    "mean_curvature_sd_per_um": "sd of H [1/µm]",
    "mean_curvature_p05_per_um": "H 5th pct [1/µm]",
    "mean_curvature_p95_per_um": "H 95th pct [1/µm]",
    "concave_area_fraction": "concave area fraction",
    "normalised_mean_curvature": "mean H × r_eq",
    "gaussian_curvature_mean_per_um2": "mean K [1/µm²]",
    "gaussian_curvature_sd_per_um2": "sd of K [1/µm²]",
    "area_um2": "area [µm²]",
    "perimeter_um": "perimeter [µm]",
    "circularity": "circularity",
    "growth_rate_um3_per_frame": "growth [µm³/frame]",
    "growth_rate_um2_per_frame": "growth [µm²/frame]",
    "relative_growth_rate_per_frame": "rel. growth [1/frame]",
    "shape_change": "shape change (1-Dice)",
}


def label_of(name: str) -> str:
    """Readable axis label of a descriptor column."""
    return LABELS.get(name, name.replace("_", " "))


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    from cellinr._util.figures import save_png

    return save_png(fig, path, dpi=dpi, facecolor="white")


def _grid(n: int, ncols: int, panel: tuple[float, float]):
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def distribution_grid(
    values: Mapping[str, Sequence[np.ndarray]],
    set_names: Sequence[str],
    path: str | os.PathLike,
    *,
    titles: Mapping[str, str] | None = None,
    ncols: int = 4,
) -> Path:
    """One panel per descriptor with a violin (or strip of points) per set.

    Parameters
    ----------
    values : descriptor -> one 1-D array of finite values per set
    set_names : names of the sets, in the order of the arrays
    titles : descriptor -> panel title (e.g. the statistics); default the descriptor label
    """
    names = list(values)
    fig, axes = _grid(len(names), ncols, (3.3, 2.7))
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, names):
        arrays = [np.asarray(a, float) for a in values[name]]
        pooled = np.concatenate([a for a in arrays if len(a)]) if any(len(a) for a in arrays) else np.zeros(0)
        # heavy tails (e.g. a few huge objects) would squash the violins: show log10 values instead
        log = bool(len(pooled) and pooled.min() > 0 and pooled.max() / pooled.min() > 20)
        if log:
            arrays = [np.log10(a) for a in arrays]
        for i, arr in enumerate(arrays):
            colour = SET_COLOURS[i % len(SET_COLOURS)]
            if len(arr) >= 2 and np.ptp(arr) > 0:
                parts = ax.violinplot([arr], positions=[i], widths=0.8, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(colour)
                    body.set_edgecolor(colour)
                    body.set_alpha(0.45)
            if len(arr):
                jitter = rng.uniform(-0.12, 0.12, len(arr))
                ax.scatter(i + jitter, arr, s=5, color=colour, alpha=0.6, linewidths=0)
                q1, med, q3 = np.percentile(arr, [25, 50, 75])
                ax.plot([i, i], [q1, q3], color="black", lw=2.5)
                ax.plot(i, med, "o", color="white", mec="black", ms=4)
        if log:
            ax.set_ylabel("log10", fontsize=7.5)
        ax.set_xticks(range(len(arrays)))
        ax.set_xticklabels(list(set_names)[: len(arrays)], fontsize=8)
        ax.set_xlim(-0.6, len(arrays) - 0.4)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title((titles or {}).get(name, label_of(name)), fontsize=8.5)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def timecourse_grid(
    curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    set_names: Sequence[str],
    path: str | os.PathLike,
    *,
    ncols: int = 4,
) -> Path:
    """One panel per descriptor: mean ± sd over normalised time, one line per set.

    Parameters
    ----------
    curves : descriptor -> per set a tuple (time (K,), mean (K,), sd (K,)); NaN entries are skipped
    """
    names = list(curves)
    fig, axes = _grid(len(names), ncols, (3.3, 2.5))
    for ax, name in zip(axes, names):
        for i, (t, mean, sd) in enumerate(curves[name]):
            colour = SET_COLOURS[i % len(SET_COLOURS)]
            ok = np.isfinite(mean)
            ax.plot(t[ok], mean[ok], color=colour, lw=1.6, label=set_names[i], marker="o", ms=3)
            sd = np.where(np.isfinite(sd), sd, 0.0)
            ax.fill_between(t[ok], (mean - sd)[ok], (mean + sd)[ok], color=colour, alpha=0.2, linewidth=0)
        ax.set_title(label_of(name), fontsize=8.5)
        ax.set_xlabel("normalised time", fontsize=7.5)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if names:
        axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def embedding_plot(
    points: Sequence[np.ndarray],
    set_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
    xlabel: str = "PC 1",
    ylabel: str = "PC 2",
) -> Path:
    """Scatter plot of 2-D embeddings, one colour per set.

    Parameters
    ----------
    points : per set an (N, 2) array
    """
    fig, ax = subplots(figsize=(5.0, 4.2))
    for i, pts in enumerate(points):
        pts = np.asarray(pts, float).reshape(-1, 2)
        ax.scatter(pts[:, 0], pts[:, 1], s=12, alpha=0.65, color=SET_COLOURS[i % len(SET_COLOURS)],
                   label=f"{set_names[i]} (n={len(pts)})", linewidths=0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9.5)
    fig.tight_layout()
    return save_figure(fig, path)


def image_grid(
    images: Sequence[Sequence[np.ndarray | None]],
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    cell: float = 1.6,
    title: str = "",
    cmap: str = "gray",
    captions: Sequence[Sequence[str]] = (),
) -> Path:
    """A grid of 2-D images (e.g. maximum-intensity projections); None leaves a cell empty.

    Parameters
    ----------
    images : rows of (H, W) arrays
    captions : rows of texts shown under the images (long texts keep their end)
    """
    nrows = len(images)
    ncols = max((len(r) for r in images), default=1)
    fig, axes = subplots(nrows, ncols, figsize=(cell * ncols + 0.6, cell * nrows + (0.4 if title else 0.1)),
                             squeeze=False)
    for r, row in enumerate(images):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            img = row[c] if c < len(row) else None
            if img is not None:
                ax.imshow(np.asarray(img), cmap=cmap, interpolation="nearest")
                if captions and r < len(captions) and c < len(captions[r]):
                    text = captions[r][c]
                    ax.set_xlabel(text if len(text) <= 22 else "…" + text[-21:], fontsize=6.5)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=8.5)
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def histogram_pair(
    a: np.ndarray, b: np.ndarray, labels: Sequence[str], path: str | os.PathLike, *, xlabel: str, title: str = "",
    bins: np.ndarray | None = None, density: bool = True,
) -> Path:
    """Overlaid histograms of two samples (e.g. within- vs between-group distances); ``b`` may be empty."""
    fig, ax = subplots(figsize=(5.0, 3.4))
    data = [np.asarray(x, float) for x in (a, b)]
    finite = np.concatenate([d[np.isfinite(d)] for d in data]) if any(len(d) for d in data) else np.zeros(1)
    if bins is None:
        bins = np.histogram_bin_edges(finite, bins=30) if np.ptp(finite) > 0 else 10
    for i, d in enumerate(data):
        if len(d):
            ax.hist(d, bins=bins, alpha=0.55, color=SET_COLOURS[i], label=f"{labels[i]} (n={len(d)})",
                    density=density)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("density" if density else "count", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9.5)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# text


def format_number(value, digits: int = 4) -> str:
    """Compact number formatting for tables (NaN as an en dash)."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format_number(v) if not isinstance(v, str) else v for v in r) + " |")
    return "\n".join(lines)


def html_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    def cell(v) -> str:
        return f"<td>{html.escape(v if isinstance(v, str) else format_number(v))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
    "code{background:#f4f4f4;padding:0 3px}"
)


class Report:
    """A report built section by section and written as Markdown and as standalone HTML."""

    def __init__(self, title: str):
        self.title = title
        self._md: list[str] = [f"# {title}\n"]
        self._html: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        self._md.append(f"{'#' * level} {text}\n")
        self._html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        """Add a paragraph (Markdown source; `code` spans are converted for HTML)."""
        self._md.append(text + "\n")
        escaped = html.escape(text)
        parts = escaped.split("`")
        converted = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
        self._html.append(f"<p>{converted}</p>")

    def bullets(self, items: Sequence[str]) -> None:
        self._md.append("\n".join(f"- {i}" for i in items) + "\n")
        self._html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence]) -> None:
        self._md.append(markdown_table(header, rows) + "\n")
        self._html.append(html_table(header, rows))

    def image(self, relpath: str, caption: str = "") -> None:
        self._md.append(f"![{caption}]({relpath})\n" + (f"\n*{caption}*\n" if caption else ""))
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._html.append(f'<figure><img src="{html.escape(relpath)}" alt="{html.escape(caption)}">{cap}</figure>')

    def markdown(self) -> str:
        return "\n".join(self._md)

    def html(self) -> str:
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(self._html) + "\n</body></html>\n"
        )

    def write(self, folder: str | os.PathLike, stem: str = "report") -> tuple[Path, Path]:
        from cellinr._util.atomic import atomic_write_text

        folder = Path(folder)
        md = folder / f"{stem}.md"
        page = folder / f"{stem}.html"
        atomic_write_text(md, self.markdown())
        atomic_write_text(page, self.html())
        return md, page
