"""OME-Zarr (OME-NGFF) images: a streaming writer and the reader branch of :func:`cellinr.io.sources.open_source`.

Layout written by :class:`OmeZarrWriter` (one store per sequence, ``<name>.ome.zarr``)::

    <name>.ome.zarr/               image group: multiscales metadata, axes t, [z,] y, x with units
        0, 1, ...                  resolution levels (level k halves every spatial axis k times)
        labels/<label name>/0, ... label images (multiscales + image-label metadata), same axes

Arrays are (T, Z, Y, X) or (T, Y, X), chunked one frame deep, Blosc-zstd compressed; empty chunks
are not stored. Physical units are in the metadata: ``micrometer`` for space and ``minute`` for time
(the voxel size and frame interval are the ``scale`` coordinate transformation of every level). The
metadata is written with the ``ome-zarr`` package (``ome_zarr.writer``), the arrays with ``zarr``;
both are an optional extra (``pip install "cellinr[ome-zarr]"``). NGFF 0.4 (Zarr v2, the most widely
read) is the default; ``version="0.5"`` writes Zarr v3.

The writer holds one frame (plus its smaller levels) at a time, so memory does not depend on the
number of frames. A store is built under a temporary name and renamed when :meth:`OmeZarrWriter.close`
succeeds, so an interrupted job never leaves a store that looks complete.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import DependencyError, InputError, ParameterError

log = logging.getLogger(__name__)

#: NGFF versions the writer can produce (0.4: Zarr v2; 0.5: Zarr v3).
NGFF_VERSIONS = ("0.4", "0.5")
DEFAULT_NGFF_VERSION = "0.4"
#: File-name suffix of the stores cellinr writes.
STORE_SUFFIX = ".ome.zarr"
INSTALL_HINT = 'pip install "cellinr[ome-zarr]"'
#: Name of the label image holding the cell masks of generated sequences and benchmarks.
DEFAULT_LABEL_NAME = "cells"
#: Add resolution levels while the largest spatial axis of the last level is longer than this.
PYRAMID_STOP = 128
#: Spatial chunk edge (voxels) of 3D and 2D frames.
CHUNK_3D = (64, 128, 128)
CHUNK_2D = (512, 512)
#: NGFF space units in microns.
SPACE_UNITS_UM = {
    "micrometer": 1.0, "nanometer": 1e-3, "angstrom": 1e-4, "picometer": 1e-6, "millimeter": 1e3,
    "centimeter": 1e4, "meter": 1e6,
}
#: NGFF time units in minutes.
TIME_UNITS_MIN = {
    "millisecond": 1 / 60000, "second": 1 / 60, "minute": 1.0, "hour": 60.0, "day": 1440.0,
    "microsecond": 1 / 6e7,
}


def require_ngff(what: str = "OME-Zarr"):
    """Import and return (zarr, ome_zarr.writer, ome_zarr.format), or raise one line with the install hint."""
    try:
        import zarr
        from ome_zarr import format as ngff_format
        from ome_zarr import writer as ngff_writer
    except ImportError as exc:
        raise DependencyError(f"{what} needs the zarr and ome-zarr packages ({exc.name} is missing): "
                              f"{INSTALL_HINT}") from None
    return zarr, ngff_writer, ngff_format


def is_zarr_store(path: str | os.PathLike) -> bool:
    """True for a folder that is a Zarr group or array (``.zgroup``/``.zattrs``/``.zarray`` or ``zarr.json``)."""
    path = Path(path)
    return path.is_dir() and any((path / f).is_file() for f in (".zgroup", ".zattrs", ".zarray", "zarr.json"))


def zarr_stores(folder: str | os.PathLike) -> list[Path]:
    """The Zarr stores directly inside ``folder`` (hidden and temporary ones skipped), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_zarr_store(p))


def store_name(name: str) -> str:
    """The store file name of sequence ``name``."""
    return f"{name}{STORE_SUFFIX}"


def _compressor(zarr_format: int):
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


def pyramid_shapes(frame_shape: Sequence[int], levels: int | str = "auto") -> list[tuple[int, ...]]:
    """Spatial shapes of the resolution levels: level k halves (rounding up) every axis longer than 1.

    ``levels="auto"`` adds levels while the largest axis of the last one exceeds :data:`PYRAMID_STOP`
    (a 256^3 frame gets 256^3 and 128^3; a 64^3 frame one level).
    """
    shapes = [tuple(int(s) for s in frame_shape)]
    if levels == "auto":
        while max(shapes[-1]) > PYRAMID_STOP:
            shapes.append(tuple(-(-s // 2) for s in shapes[-1]))
        return shapes
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ParameterError(f"levels: expected 'auto' or a positive integer, got {levels!r}")
    for _ in range(int(levels) - 1):
        shapes.append(tuple(-(-s // 2) if s > 1 else 1 for s in shapes[-1]))
    return shapes


def downsample(frame: np.ndarray, *, labels: bool) -> np.ndarray:
    """One pyramid step of a frame: every second voxel for labels, 2^d block means for images."""
    if labels:
        return np.ascontiguousarray(frame[tuple(slice(None, None, 2) if s > 1 else slice(None)
                                                for s in frame.shape)])
    from skimage.measure import block_reduce

    block = tuple(2 if s > 1 else 1 for s in frame.shape)
    reduced = block_reduce(frame.astype(np.float32), block, np.mean)
    if frame.dtype.kind in "iub":
        reduced = np.round(reduced)
    return reduced.astype(frame.dtype)


class _Image:
    """One multiscale image (the root image or a label image) being filled frame by frame."""

    def __init__(self, group, *, n_frames, shapes, dtype, chunks, zarr_format, dimension_names, labels: bool):
        self.group = group
        self.labels = labels
        self.dtype = np.dtype(dtype)
        self.arrays = []
        extra = ({"chunk_key_encoding": {"name": "v2", "separator": "/"}} if zarr_format == 2
                 else {"dimension_names": dimension_names})
        for k, shape in enumerate(shapes):
            self.arrays.append(group.create_array(
                str(k), shape=(n_frames, *shape), chunks=(1, *(min(c, s) for c, s in zip(chunks, shape))),
                dtype=self.dtype, fill_value=0, compressors=[_compressor(zarr_format)], **extra))
        self.lo, self.hi = math.inf, -math.inf

    def write(self, t: int, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype == bool:
            frame = frame.astype(self.dtype)
        if frame.shape != self.arrays[0].shape[1:]:
            raise ParameterError(f"frame {t}: shape {frame.shape}, the store holds frames of {self.arrays[0].shape[1:]}")
        frame = frame.astype(self.dtype, copy=False)
        if frame.size:
            self.lo, self.hi = min(self.lo, float(frame.min())), max(self.hi, float(frame.max()))
        for k, arr in enumerate(self.arrays):
            if k:
                frame = downsample(frame, labels=self.labels)
            arr[t] = frame


class OmeZarrWriter:
    """Write a (T, Z, Y, X) or (T, Y, X) sequence to an OME-Zarr store one frame at a time.

    Parameters
    ----------
    path : the store to create (conventionally ``<name>.ome.zarr``).
    n_frames : number of time points T.
    frame_shape : (Z, Y, X) or (Y, X) voxels.
    dtype : dtype of the root image, or None for a store whose root image is its first label image
        (generated masks: the root image then holds the mask too, as NGFF labels need a parent image).
    labels : {label name: dtype} of the label images (e.g. ``{"cells": "uint16"}``).
    spacing : (Z, Y, X) or (Y, X) microns, or None (1, without unit).
    frame_interval : minutes between frames, or None (1, without unit).
    name : the image's name in the metadata.
    levels : "auto" (see :func:`pyramid_shapes`) or a number of resolution levels.
    version : NGFF version, one of :data:`NGFF_VERSIONS`.
    overwrite : replace an existing store at ``path``.

    Use as a context manager, or call :meth:`close` after the last frame; on an exception inside the
    ``with`` block the partial store is removed.

    Examples
    --------
    >>> with OmeZarrWriter("cell.ome.zarr", n_frames=T, frame_shape=(Z, Y, X), dtype=None,
    ...                    labels={"cells": "uint8"}, spacing=(1, 1, 1), frame_interval=5) as w:
    ...     for t in range(T):
    ...         w.write_frame(t, labels={"cells": mask[t]})
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_frames: int,
        frame_shape: Sequence[int],
        dtype=None,
        labels: Mapping[str, object] | None = None,
        spacing: Sequence[float] | None = None,
        frame_interval: float | None = None,
        name: str | None = None,
        levels: int | str = "auto",
        version: str = DEFAULT_NGFF_VERSION,
        overwrite: bool = False,
    ):
        from cellinr.errors import OutputExistsError
        from cellinr.io.units import parse_frame_interval, parse_spacing

        zarr, _, ngff_format = require_ngff("writing OME-Zarr")
        if version not in NGFF_VERSIONS:
            raise ParameterError(f"NGFF version {version!r}: choose one of {', '.join(NGFF_VERSIONS)}")
        self.path = Path(path)
        frame_shape = tuple(int(s) for s in frame_shape)
        if len(frame_shape) not in (2, 3) or min(frame_shape) < 1:
            raise ParameterError(f"frame_shape {frame_shape}: expected (Z, Y, X) or (Y, X) positive sizes")
        if int(n_frames) < 1:
            raise ParameterError(f"n_frames {n_frames}: must be positive")
        labels = dict(labels or {})
        if dtype is None and not labels:
            raise ParameterError("an OME-Zarr store needs an image dtype or at least one label image")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path}: output exists; pass --overwrite to replace it")
        self.n_frames = int(n_frames)
        self.frame_shape = frame_shape
        self.spatial = "ZYX"[-len(frame_shape):]
        self.spacing = parse_spacing(spacing, ndim=len(frame_shape), name="spacing")
        self.frame_interval = parse_frame_interval(frame_interval, name="frame_interval")
        self.name = name or self.path.name.removesuffix(STORE_SUFFIX)
        self.version = version
        self.fmt = ngff_format.format_from_version(version)
        self.shapes = pyramid_shapes(frame_shape, levels)
        self.label_names = list(labels)
        self._image_is_label = dtype is None
        self._written = np.zeros(self.n_frames, bool)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the job runner removes ".tmp-<name>-*" leftovers of interrupted runs
        self._tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.name}-", dir=self.path.parent))
        self._closed = False
        try:
            zarr_format = self.fmt.zarr_format
            self._root = zarr.open_group(str(self._tmp), mode="w", zarr_format=zarr_format)
            chunks = CHUNK_3D if len(frame_shape) == 3 else CHUNK_2D
            dims = ["t", *self.spatial.lower()]
            image_dtype = np.dtype(labels[self.label_names[0]]) if dtype is None else np.dtype(dtype)
            self._image = _Image(self._root, n_frames=self.n_frames, shapes=self.shapes, dtype=image_dtype,
                                 chunks=chunks, zarr_format=zarr_format, dimension_names=dims, labels=dtype is None)
            self._labels = {}
            if labels:
                group = self._root.create_group("labels")
                for label_name, label_dtype in labels.items():
                    if np.dtype(label_dtype).kind not in "iu":
                        raise ParameterError(f"label image {label_name!r}: dtype {label_dtype} is not an integer type")
                    self._labels[label_name] = _Image(group.create_group(label_name), n_frames=self.n_frames,
                                                      shapes=self.shapes, dtype=label_dtype, chunks=chunks,
                                                      zarr_format=zarr_format, dimension_names=dims, labels=True)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    # -- writing ------------------------------------------------------------------------------------
    def write_frame(self, t: int, image: np.ndarray | None = None, *,
                    labels: Mapping[str, np.ndarray] | None = None) -> None:
        """Write frame ``t``: the root image (unless the store's image is its first label) and label images."""
        if self._closed:
            raise ParameterError(f"{self.path}: the writer is closed")
        if not 0 <= int(t) < self.n_frames:
            raise IndexError(f"frame {t} out of range for {self.n_frames} frames")
        labels = dict(labels or {})
        unknown = set(labels) - set(self._labels)
        missing = set(self._labels) - set(labels)
        if unknown or missing:
            raise ParameterError(f"frame {t}: label images {sorted(labels)}, the store has {sorted(self._labels)}")
        if self._image_is_label:
            if image is not None:
                raise ParameterError("this store's image is its first label image; pass labels only")
            image = labels[self.label_names[0]]
        elif image is None:
            raise ParameterError(f"frame {t}: the root image is missing")
        self._image.write(int(t), image)
        for label_name, frame in labels.items():
            self._labels[label_name].write(int(t), frame)
        self._written[int(t)] = True

    def write_mask(self, t: int, mask: np.ndarray) -> None:
        """Write frame ``t`` of a store made by :func:`sequence_writer` (its image is its one label image)."""
        self.write_frame(t, labels={self.label_names[0]: np.asarray(mask).astype(np.uint8, copy=False)})

    def _scale(self, level: int) -> list[float]:
        factors = [s0 / s for s0, s in zip(self.shapes[0], self.shapes[level])]
        base = self.spacing or (1.0,) * len(self.frame_shape)
        # the exact factor of every axis (2 for even sizes), so level extents match level 0
        return [float(self.frame_interval or 1.0), *(float(b) * f for b, f in zip(base, factors))]

    def _axes(self) -> list[dict]:
        t = {"name": "t", "type": "time"}
        if self.frame_interval is not None:
            t["unit"] = "minute"
        space = [{"name": a.lower(), "type": "space", **({"unit": "micrometer"} if self.spacing else {})}
                 for a in self.spatial]
        return [t, *space]

    def _write_metadata(self, group, image: _Image, *, name: str, omero: bool) -> None:
        _, ngff_writer, _ = require_ngff()
        datasets = [{"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": self._scale(k)}]}
                    for k in range(len(self.shapes))]
        metadata = {}
        if omero:  # display window of the image (viewers use it for the contrast limits)
            lo, hi = (image.lo, image.hi) if image.hi >= image.lo else (0.0, 1.0)
            metadata["omero"] = {"channels": [{"label": name, "color": "FFFFFF", "active": True,
                                               "window": {"min": lo, "max": hi, "start": lo, "end": hi}}],
                                 "rdefs": {"model": "greyscale"}}
        ngff_writer.write_multiscales_metadata(group, datasets, fmt=self.fmt, axes=self._axes(), name=name,
                                               **({"metadata": metadata} if metadata else {}))

    def close(self) -> Path:
        """Write the metadata and move the complete store into place; returns its path."""
        if self._closed:
            return self.path
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            self.abort()
            raise ParameterError(f"{self.path}: frames {missing[:5].tolist()} were never written")
        _, ngff_writer, _ = require_ngff()
        try:
            self._write_metadata(self._root, self._image, name=self.name, omero=True)
            for label_name, image in self._labels.items():
                self._write_metadata(image.group, image, name=label_name, omero=False)
                ngff_writer.write_label_metadata(self._root["labels"], label_name, fmt=self.fmt,
                                                 source={"image": "../../"})
            if self.path.exists():
                old = self.path.with_name(f".old-{self.path.name}-{os.getpid()}")
                os.replace(self.path, old)
                os.replace(self._tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Remove the partial store (nothing is left at ``path``)."""
        self._closed = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> OmeZarrWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def sequence_writer(path: str | os.PathLike, *, n_frames: int, dims: Sequence[int], spacing=None,
                    frame_interval: float | None = None, version: str = DEFAULT_NGFF_VERSION,
                    overwrite: bool = True) -> OmeZarrWriter:
    """The writer of one binary mask sequence (generate, reconstruct): label image ``cells`` (uint8, 1
    inside), which is also the store's image; fill it with :meth:`OmeZarrWriter.write_mask`."""
    return OmeZarrWriter(path, n_frames=n_frames, frame_shape=dims, dtype=None,
                         labels={DEFAULT_LABEL_NAME: "uint8"}, spacing=spacing, frame_interval=frame_interval,
                         version=version, overwrite=overwrite)


def write_ome_zarr(path: str | os.PathLike, image: np.ndarray | None = None, *,
                   labels: Mapping[str, np.ndarray] | None = None, **kwargs) -> Path:
    """Write whole (T, Z, Y, X) / (T, Y, X) arrays at once (small data, tests) through :class:`OmeZarrWriter`."""
    labels = dict(labels or {})
    ref = image if image is not None else next(iter(labels.values()))
    ref = np.asarray(ref)
    with OmeZarrWriter(path, n_frames=ref.shape[0], frame_shape=ref.shape[1:],
                       dtype=None if image is None else np.asarray(image).dtype,
                       labels={k: np.asarray(v).dtype if np.asarray(v).dtype != bool else np.uint8
                               for k, v in labels.items()}, **kwargs) as writer:
        for t in range(ref.shape[0]):
            writer.write_frame(t, None if image is None else image[t], labels={k: v[t] for k, v in labels.items()})
    return Path(path)


# -- reading ----------------------------------------------------------------------------------------
def _ome_attrs(group) -> dict:
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))  # NGFF 0.5 nests the metadata under "ome"


def _multiscale_level0(group, where: str):
    """(array, axes names, scale per axis, units per axis) of the first level of a multiscales group."""
    attrs = _ome_attrs(group)
    multiscales = attrs.get("multiscales")
    if not multiscales:
        raise InputError(f"{where}: not an OME-Zarr image (the Zarr group has no NGFF 'multiscales' metadata)")
    ms = multiscales[0]
    axes = ms.get("axes")
    if not axes:
        raise InputError(f"{where}: NGFF metadata without 'axes' (version {ms.get('version', '?')}; cellinr needs "
                         "named axes, NGFF 0.4 or later)")
    names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise InputError(f"{where}: NGFF 'multiscales' lists no datasets")
    first = datasets[0]
    scale = [1.0] * len(names)
    for transforms in (first.get("coordinateTransformations") or [], ms.get("coordinateTransformations") or []):
        for tr in transforms:
            if tr.get("type") == "scale" and "scale" in tr:
                scale = [a * float(b) for a, b in zip(scale, tr["scale"])]
    try:
        array = group[first["path"]]
    except KeyError:
        raise InputError(f"{where}: NGFF level {first['path']!r} is listed but missing from the store") from None
    if len(array.shape) != len(names):
        raise InputError(f"{where}: NGFF axes {names} do not match the array's {len(array.shape)} dimensions")
    return array, names, scale, units


def _pick_image(root, path: Path, dataset: str | None):
    """The group to read: a label image (preferred, or named by ``dataset``) or the root image."""
    attrs = _ome_attrs(root)
    where = str(path)
    if "image-label" in attrs or "multiscales" in attrs and dataset is None and "labels" not in root:
        return root, where, "labels" if "image-label" in attrs else "image"
    names = []
    labels_group = None
    if "labels" in attrs and "multiscales" not in attrs:  # the labels group itself
        labels_group = root
    elif "labels" in root:
        labels_group = root["labels"]
    if labels_group is not None:
        names = list(_ome_attrs(labels_group).get("labels") or [])
    if dataset is not None:
        if dataset in ("image", "0", "") and "multiscales" in attrs:
            return root, where, "image"
        if dataset in names:
            return labels_group[dataset], f"{where} (labels/{dataset})", "labels"
        choices = ", ".join(["image", *names])
        raise InputError(f"{where}: no label image {dataset!r} in the OME-Zarr store (choose: {choices})")
    if names:
        if len(names) > 1:
            log.info("%s: reading label image %r of %s (pass --dataset NAME for another)", where, names[0], names)
        return labels_group[names[0]], f"{where} (labels/{names[0]})", "labels"
    if "multiscales" not in attrs:
        raise InputError(f"{where}: a Zarr store without OME-NGFF 'multiscales' or 'labels' metadata (not OME-Zarr)")
    return root, where, "image"


def open_ngff(path: str | os.PathLike, *, axes: str | None = None, spacing=None, dataset: str | None = None,
              ndim: int | None = 3, frame_interval: float | None = None):
    """An OME-Zarr image or label image as a lazy :class:`cellinr.io.framesource.FrameSource`.

    A store with label images reads its first label image (``dataset`` names another, or ``"image"``
    for the root image); a store without labels reads its image. The highest-resolution level is read,
    one frame (or box) at a time. Voxel size and frame interval come from the ``scale``
    transformation and the axis units (converted to microns and minutes).

    Raises
    ------
    DependencyError : zarr is not installed.
    InputError : not a Zarr store, not NGFF, or NGFF without the spatial axes needed (one line naming
        the store and what is missing).
    """
    from cellinr.io.framesource import (
        ArrayFrameSource,
        resolve_axes,
        spatial_axes_of,
        trim_spacing,
    )

    try:
        import zarr
    except ImportError:
        raise DependencyError(f"{path}: reading OME-Zarr needs the zarr package: {INSTALL_HINT}") from None
    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is no group
        raise InputError(f"{path}: not a readable Zarr group ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
                         ) from None
    group, where, kind = _pick_image(root, path, dataset)
    array, names, scale, units = _multiscale_level0(group, where)
    letters = "".join(n[:1].upper() for n in names)
    if len(set(letters)) != len(letters) or any(c not in "TCZYX" for c in letters):
        raise InputError(f"{where}: NGFF axes {names} are not among t, c, z, y, x")
    want = ndim if ndim is not None else (3 if "Z" in letters else 2)
    needed = "ZYX" if want == 3 else "YX"
    missing = [c.lower() for c in needed if c not in letters]
    if missing and axes is None:
        raise InputError(f"{where}: NGFF axes {', '.join(names)} lack {', '.join(missing)}; cellinr needs "
                         f"{', '.join(needed.lower())} (and optionally t)")
    resolved = resolve_axes(letters, tuple(array.shape), axes, where=where, ndim=ndim)
    spatial = spatial_axes_of(resolved, ndim)
    file_spacing = None
    sizes_um = []
    known = True
    for letter in "ZYX":
        if letter not in letters:
            sizes_um.append(1.0)
            continue
        i = letters.index(letter)
        unit = units[i]
        factor = SPACE_UNITS_UM.get(str(unit).lower()) if unit is not None else None
        if factor is None:
            known = False
        sizes_um.append(scale[i] * (factor or 1.0))
    if known:
        file_spacing = tuple(sizes_um)
    elif any(scale[letters.index(c)] != 1.0 for c in "ZYX" if c in letters):
        file_spacing = tuple(sizes_um)
        log.info("%s: NGFF space axes have no (or an unknown) unit; taking the scale as microns", where)
    interval = None
    if "T" in letters:
        i = letters.index("T")
        factor = TIME_UNITS_MIN.get(str(units[i]).lower()) if units[i] is not None else None
        if factor is not None and scale[i] > 0:
            interval = scale[i] * factor
    spacing_from = "argument" if spacing is not None else ("metadata" if file_spacing else "unknown")
    return ArrayFrameSource(path, array, format="ome-zarr", kind="labels", axes=resolved,
                            spacing=spacing if spacing is not None else trim_spacing(file_spacing, resolved, ndim),
                            spacing_from=spacing_from, spatial=spatial,
                            dataset=None if kind == "image" and dataset is None else (dataset or group.basename),
                            frame_interval=frame_interval if frame_interval is not None else interval)


def ngff_levels(path: str | os.PathLike, *, dataset: str | None = None) -> list:
    """Every resolution level (lazy zarr arrays, largest first) of the image :func:`open_ngff` reads."""
    try:
        import zarr
    except ImportError:
        raise DependencyError(f"{path}: reading OME-Zarr needs the zarr package: {INSTALL_HINT}") from None
    path = Path(path)
    group, where, _ = _pick_image(zarr.open_group(str(path), mode="r"), path, dataset)
    _multiscale_level0(group, where)  # the same checks
    return [group[d["path"]] for d in _ome_attrs(group)["multiscales"][0]["datasets"]]
