"""The authors' SDF training sets (folders of ``sdf_vid`` HDF5 files) as prepared data sets, made once and reused.

``cellinr train`` accepts such a folder in place of a prepared data set: it is prepared into the run
folder (:func:`prepare_reference_folder`) and reused while the files are unchanged
(:func:`reference_folder_is_prepared`, by the files' paths, sizes and modification times).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cellinr.data.preparation import prepare
from cellinr.errors import InputError

log = logging.getLogger(__name__)

#: Beside a data set prepared from the authors' files: which files (size, mtime) it was made from.
REFERENCE_SOURCES_FILE = "reference_sources.json"


def _file_stamps(files: Sequence[Path]) -> list[dict]:
    stamps = []
    for f in files:
        st = f.stat()
        stamps.append({"file": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return stamps


def reference_folder_is_prepared(folder: str | os.PathLike, out: str | os.PathLike) -> bool:
    """True when ``out`` holds a data set prepared from the current ``sdf_vid`` files of ``folder``."""
    from cellinr.io.arrays import reference_sdf_files

    out = Path(out)
    try:
        recorded = json.loads((out / REFERENCE_SOURCES_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (out / "manifest.json").is_file() and recorded == _file_stamps(reference_sdf_files(folder))


def prepare_reference_folder(folder: str | os.PathLike, out: str | os.PathLike, *,
                             progress: bool | None = None) -> Path:
    """Prepare a folder of the authors' ``sdf_vid`` files into ``out``, once (reused while the files are unchanged).

    The cells are the files' ``SDF <= 0``, one sequence per file in the authors' order (sorted
    names), on a cube of the files' largest frame edge with the default clamp; the files carry no
    voxel size, so 1 micron is assumed. This is ``prepare(sorted files, out, size=edge)``; call
    :func:`prepare` for other options.
    """
    from cellinr._util.atomic import atomic_write_text
    from cellinr.io.arrays import reference_sdf_files
    from cellinr.io.sources import open_source

    folder, out = Path(folder), Path(out)
    files = reference_sdf_files(folder)
    if not files:
        raise InputError(f"{folder}: no HDF5 files with an sdf_vid dataset")
    if reference_folder_is_prepared(folder, out):
        log.info("%s: using the data set prepared before in %s", folder, out)
        return out
    with open_source(files[0]) as src:
        edge = max(16, int(max(src.frame_shape)))
    log.warning("%s: %d sdf_vid files of the authors; preparing them once into %s (as `cellinr prepare %s "
                "--out %s --size %d`)", folder, len(files), out, folder, out, edge)
    prepare(files, out, size=edge, overwrite=True, progress=progress)
    atomic_write_text(out / REFERENCE_SOURCES_FILE, json.dumps(_file_stamps(files), indent=1))
    return out
