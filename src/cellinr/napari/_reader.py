"""The plugin's reader: cellinr files and folders as napari layers (see :mod:`cellinr.napari._layers`)."""

from __future__ import annotations

import os


def napari_get_reader(path: str | os.PathLike | list):
    """The reader function for ``path`` when it is a cellinr file or folder, else None (npe2 contract).

    Recognising ``path`` reads only small JSON files; errors while reading the data are raised (napari
    shows them), not hidden behind "no reader".
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    from cellinr.napari._layers import reader_for

    reader = reader_for(path)
    if reader is None:
        return None
    return lambda _path: reader()
