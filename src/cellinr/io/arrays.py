"""HDF5 and NumPy inputs as frame sources (see :func:`cellinr.io.sources.open_source`).

HDF5: any dataset (``dataset`` names it), including the authors' SDF training files (dataset
``sdf_vid`` written by MATLAB: h5py sees the axes reversed) and this package's ``sdf`` files.
NumPy: ``.npy`` (memory-mapped) and ``.npz`` (``dataset`` names the array; ``labels``/``masks``
are preferred).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellinr.errors import InputError, ParameterError
from cellinr.io.framesource import (
    HDF5_SUFFIXES,
    REFERENCE_SDF_KEY,
    ArrayFrameSource,
    FrameSource,
    resolve_axes,
    spatial_axes_of,
    trim_spacing,
)
from cellinr.io.units import parse_frame_interval, parse_spacing


def _hdf5_datasets(group, prefix: str = "") -> list[str]:
    import h5py

    names = []
    for key, item in group.items():
        if isinstance(item, h5py.Dataset):
            names.append(prefix + key)
        elif isinstance(item, h5py.Group):
            names.extend(_hdf5_datasets(item, prefix + key + "/"))
    return names


def _attr_text(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "SU" and value.size == 1:
        return _attr_text(value.item())
    return None


def _hdf5_spacing(dset) -> tuple[float, float, float] | None:
    for key in ("spacing", "element_size_um", "voxel_size_um", "spacing_um"):
        if key in dset.attrs:
            value = dset.attrs[key]
            text = _attr_text(value)
            if text is not None:
                import json

                try:
                    value = json.loads(text)
                except ValueError:
                    continue
            try:
                return parse_spacing(np.asarray(value, dtype=float).ravel().tolist()[-3:])
            except ParameterError:
                continue
    return None


def open_hdf5(path: Path, dataset: str | None, axes: str | None, spacing, ndim, interval) -> FrameSource:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: cannot read HDF5 ({exc})") from None
    try:
        names = _hdf5_datasets(f)
        if dataset is None:
            if REFERENCE_SDF_KEY in f:
                dataset = REFERENCE_SDF_KEY
            elif len(names) == 1:
                dataset = names[0]
            else:
                listing = ", ".join(names) if names else "none"
                raise InputError(f"{path}: pass --dataset NAME to pick a dataset (datasets: {listing})")
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            listing = ", ".join(names) if names else "none"
            raise InputError(f"{path}: no dataset {dataset!r} in the file (datasets: {listing})")
        dset = f[dataset]
        base = dataset.rsplit("/", 1)[-1]
        is_reference = base == REFERENCE_SDF_KEY
        kind = "sdf" if base in (REFERENCE_SDF_KEY, "sdf") and dset.dtype.kind == "f" else "labels"
        stored_axes = _attr_text(dset.attrs.get("axes")) if "axes" in dset.attrs else None
        if stored_axes is None and is_reference and dset.ndim == 4:
            # MATLAB writes column-major, so h5py sees (X, Y, Z, T); a file written from Python in
            # (T, Z, Y, X) order is recognised by its one-frame chunks on the first axis.
            chunks = dset.chunks
            stored_axes = "TZYX" if chunks and chunks[0] == 1 and chunks[-1] != 1 else "XYZT"
        elif stored_axes is None and is_reference and dset.ndim == 3:
            stored_axes = "XYZ"
        if stored_axes is not None and len(stored_axes) != dset.ndim:
            stored_axes = None
        resolved = resolve_axes(stored_axes.upper() if stored_axes else None, dset.shape, axes, where=str(path),
                                ndim=ndim)
        file_spacing = _hdf5_spacing(dset)
        if interval is None and "frame_interval_min" in dset.attrs:
            interval = parse_frame_interval(float(dset.attrs["frame_interval_min"]), name=f"{path}: frame_interval_min")
        if kind == "sdf" and file_spacing is None and "voxel_size_um" in dset.attrs:
            file_spacing = parse_spacing(float(dset.attrs["voxel_size_um"]))
    except BaseException:
        f.close()
        raise
    spacing_from = "argument" if spacing is not None else ("metadata" if file_spacing else "unknown")
    return ArrayFrameSource(
        path, dset, closer=f.close, format="sdf_vid" if is_reference else "hdf5", kind=kind, axes=resolved,
        spacing=spacing if spacing is not None else trim_spacing(file_spacing, resolved, ndim), spacing_from=spacing_from,
        dataset=dataset, spatial=spatial_axes_of(resolved, ndim), frame_interval=interval,
    )


def open_numpy(path: Path, dataset: str | None, axes: str | None, spacing, ndim, interval) -> FrameSource:
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            fmt = "npy"
            if dataset is not None:
                raise ParameterError(f"{path}: --dataset applies to .npz and HDF5 files, not .npy")
        else:
            fmt = "npz"
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.files)
                if dataset is None:
                    preferred = [k for k in ("labels", "label", "masks", "mask") if k in keys]
                    if len(keys) == 1:
                        dataset = keys[0]
                    elif preferred:
                        dataset = preferred[0]
                    else:
                        raise InputError(f"{path}: pass --dataset NAME to pick an array (arrays: {', '.join(keys)})")
                if dataset not in keys:
                    raise InputError(f"{path}: no array {dataset!r} in the file (arrays: {', '.join(keys)})")
                array = npz[dataset]
    except (InputError, ParameterError):
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read NumPy file ({type(exc).__name__}: {exc})") from None
    resolved = resolve_axes(None, array.shape, axes, where=str(path), ndim=ndim)
    return ArrayFrameSource(path, array, format=fmt, kind="labels", axes=resolved, spacing=spacing,
                            spacing_from="argument" if spacing is not None else "unknown", dataset=dataset,
                            spatial=spatial_axes_of(resolved, ndim), frame_interval=interval)




def reference_sdf_files(folder: str | Path) -> list[Path]:
    """The authors' SDF training files in ``folder``: HDF5 files with an ``sdf_vid`` dataset.

    Sorted by name, the order in which the authors' code numbers the sequences
    (``sorted(os.listdir(DataSource))``). [] when there are none (or ``folder`` is not a folder).
    """
    import h5py

    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.iterdir(), key=lambda q: q.name):
        if not p.is_file() or p.suffix.lower() not in HDF5_SUFFIXES or p.name.startswith("."):
            continue
        try:
            with h5py.File(p, "r") as f:
                if isinstance(f.get(REFERENCE_SDF_KEY), h5py.Dataset):
                    found.append(p)
        except OSError:
            continue
    return found
