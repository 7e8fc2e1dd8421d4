"""Atomic output: write to a temporary sibling, then rename, so a crash never leaves a partial file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cellinr.errors import OutputExistsError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffix (``suffix`` or ``path``'s own) so libraries that
    choose a format by extension (tifffile, imageio, matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder in a temporary sibling and move it into place at the end.

    Raises :class:`OutputExistsError` if ``path`` exists and is not empty, unless ``overwrite``.
    On any exception the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise OutputExistsError(f"{path}: output exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; outputs get the usual mode
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".old-{path.name}-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(path: str | os.PathLike, *, overwrite: bool, marker: str | None = None) -> Path:
    """Check that ``path`` may receive outputs, for jobs that fill a folder file by file (resumable).

    A folder is accepted if it does not exist, is empty, ``overwrite`` is set, or it holds ``marker``
    (a file written by the same kind of job, so a rerun resumes it).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputExistsError(f"{path}: exists and is not a folder")
        if any(path.iterdir()) and not overwrite and not (marker and (path / marker).exists()):
            raise OutputExistsError(f"{path}: folder holds other files; pass --overwrite to use it")
    path.mkdir(parents=True, exist_ok=True)
    return path
