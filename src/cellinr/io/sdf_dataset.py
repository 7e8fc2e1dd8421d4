"""The prepared SDF data set: ``manifest.json`` plus one HDF5 file per sequence.

Layout of ``DATASET_DIR``::

    manifest.json       format, version, sources, normalisation, one entry per sequence
    <name>.h5           dataset "sdf": (T, Z, Y, X) float32 in [-1, 1], negative inside,
                        gzip, chunked one frame per chunk; attributes as in the manifest
    <name>.png          MIP preview strip (optional)

The normalised SDF value s relates to microns as ``distance_um = s * scale_um_per_unit``;
``scale_um_per_unit = clamp * voxel_size_um`` where ``clamp`` is the outside clamp in voxels.
Frames are read one at a time so data sets far larger than RAM can be used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellinr.errors import DatasetError

FORMAT_NAME = "cellinr-sdf-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SDF_KEY = "sdf"


def _manifest_schema():
    from cellinr._util.schema import POSITIVE, POSITIVE_INT, ListOf, OneOf, Opt

    return {
        "format": str,
        "sequences": ListOf({"name": str, "file": str, "frames": POSITIVE_INT,
                             "shape": ListOf(POSITIVE_INT, length=3)}),
        "?clamp": Opt(POSITIVE),
        "?size": Opt(POSITIVE_INT),
        "?dims": Opt(ListOf(POSITIVE_INT, length=3)),
        "?voxel_size_um": Opt(OneOf(POSITIVE, ListOf(POSITIVE, length=3))),
        "?scale_um_per_unit": Opt(POSITIVE),
        "?frame_interval_min": Opt(POSITIVE),
    }


MANIFEST_SCHEMA = _manifest_schema()


@dataclass
class SequenceInfo:
    """One sequence of a data set (an entry of ``manifest["sequences"]``)."""

    name: str
    file: str
    frames: int
    shape: tuple[int, int, int]
    extra: dict = field(default_factory=dict)


class SDFDataset:
    """Read access to a prepared data set, frame by frame.

    Parameters
    ----------
    path : folder holding ``manifest.json`` and the sequence files.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: data-set folder not found")
        if not manifest_path.is_file():
            raise DatasetError(f"{self.path}: not a prepared data set (no {MANIFEST})")
        from cellinr._util.schema import read_json

        self.manifest = read_json(manifest_path, MANIFEST_SCHEMA, error=DatasetError, what="manifest")
        if self.manifest.get("format") != FORMAT_NAME:
            raise DatasetError(f"{manifest_path}: not a {FORMAT_NAME} manifest")
        self.sequences: list[SequenceInfo] = []
        names, files = set(), set()
        for i, entry in enumerate(self.manifest["sequences"]):
            if entry["name"] in names or entry["file"] in files:
                raise DatasetError(f"{manifest_path}: key sequences[{i}]: sequence {entry['name']!r} or file "
                                   f"{entry['file']!r} listed twice")
            file = Path(entry["file"])
            if file.is_absolute() or ".." in file.parts:
                raise DatasetError(f"{manifest_path}: key sequences[{i}].file: {entry['file']!r} is not a file "
                                   "name inside the data-set folder")
            names.add(entry["name"])
            files.add(entry["file"])
            known = {"name", "file", "frames", "shape"}
            self.sequences.append(
                SequenceInfo(
                    name=entry["name"], file=entry["file"], frames=int(entry["frames"]),
                    shape=tuple(int(s) for s in entry["shape"]),
                    extra={k: v for k, v in entry.items() if k not in known},
                )
            )
        if not self.sequences:
            raise DatasetError(f"{manifest_path}: the data set has no sequences")
        missing = [s.file for s in self.sequences if not (self.path / s.file).is_file()]
        if missing:
            raise DatasetError(f"{self.path}: missing sequence files: {', '.join(missing)}")
        for seq in self.sequences:
            _check_sequence_file(self.path / seq.file, seq)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sequences]

    @property
    def voxel_size_um(self) -> float | None:
        return self.manifest.get("voxel_size_um")

    @property
    def scale_um_per_unit(self) -> float | None:
        return self.manifest.get("scale_um_per_unit")

    def file(self, index: int) -> Path:
        return self.path / self.sequences[index].file

    def read_frame(self, index: int, t: int) -> np.ndarray:
        """Return frame ``t`` of sequence ``index`` as a (Z, Y, X) float32 array."""
        import h5py

        with h5py.File(self.file(index), "r") as f:
            return np.asarray(f[SDF_KEY][t], dtype=np.float32)

    def iter_frames(self, index: int) -> Iterator[np.ndarray]:
        """Yield the frames of sequence ``index`` one at a time."""
        import h5py

        with h5py.File(self.file(index), "r") as f:
            dset = f[SDF_KEY]
            for t in range(dset.shape[0]):
                yield np.asarray(dset[t], dtype=np.float32)


def _check_sequence_file(path: Path, seq: SequenceInfo) -> None:
    """Refuse a sequence file that is not HDF5, lacks the ``sdf`` dataset or disagrees with the manifest."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            dset = f.get(SDF_KEY)
            if not isinstance(dset, h5py.Dataset):
                raise DatasetError(f"{path}: no {SDF_KEY!r} dataset")
            shape, kind = tuple(dset.shape), dset.dtype.kind
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    if shape != (seq.frames, *seq.shape):
        raise DatasetError(f"{path}: dataset {SDF_KEY!r} has shape {shape}, the manifest says "
                           f"{(seq.frames, *seq.shape)}")
    if kind != "f":
        raise DatasetError(f"{path}: dataset {SDF_KEY!r} is not floating point")


def write_sequence(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    n_frames: int,
    shape: tuple[int, int, int],
    attrs: dict | None = None,
    compression_level: int = 4,
) -> Path:
    """Write one SDF sequence to ``path`` (HDF5), streaming frame by frame.

    Parameters
    ----------
    frames : iterable of (Z, Y, X) float32 arrays
        Exactly ``n_frames`` frames of shape ``shape``.
    attrs : dict, optional
        JSON-serialisable attributes stored on the ``sdf`` dataset.
    """
    from cellinr._util.native_writers import h5_check, h5_output
    from cellinr._util.outputs import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, h5_output(tmp) as f:
        dset = f.create_dataset(
            SDF_KEY, shape=(n_frames, *shape), dtype="float32", chunks=(1, *shape),
            compression="gzip", compression_opts=compression_level,
        )
        count = 0
        for t, frame in enumerate(frames):
            if t >= n_frames:
                raise ValueError(f"more than n_frames={n_frames} frames given")
            frame = np.asarray(frame, dtype=np.float32)
            if frame.shape != tuple(shape):
                raise ValueError(f"frame {t} has shape {frame.shape}, expected {tuple(shape)}")
            dset[t] = frame
            h5_check(f)
            count += 1
        if count != n_frames:
            raise ValueError(f"{count} frames given, expected {n_frames}")
        for key, value in (attrs or {}).items():
            dset.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
    return path


def new_manifest(**fields) -> dict:
    """A manifest dict with the format header; callers add ``sequences`` and normalisation fields."""

    from cellinr._util.jsonsafe import file_header

    return {**file_header(FORMAT_NAME, FORMAT_VERSION), **fields}


def write_manifest(folder: str | os.PathLike, manifest: dict) -> Path:
    from cellinr._util.atomic import atomic_write_text

    path = Path(folder) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2))
    return path
