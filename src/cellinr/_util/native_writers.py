"""Native writers that never see a write error, so a full disk is one Python error, not a crash.

HDF5 writes through a Python file that records the error instead of returning it
(:func:`h5_output`): a failed ``H5Fclose`` after a full disk leaves the HDF5 library in a state in
which the next call, or the interpreter's exit, segfaults. torch and safetensors serialise to bytes
that Python writes atomically (:func:`save_torch`, :func:`save_safetensors`). Part of the output
policy of :mod:`cellinr._util.outputs`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path

from cellinr._util.outputs import atomic_write_bytes, write_error


class _FailSafeFile(io.RawIOBase):
    """A read/write file for h5py's ``fileobj`` driver that never reports an error to HDF5.

    A failed write is recorded (:attr:`error`) and its bytes kept in memory, so later reads of the
    same range stay consistent and HDF5 closes the file normally; the caller raises afterwards.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._f = open(path, "w+b", buffering=0)
        self._pos = 0
        self.error: OSError | None = None
        self._overlay: list[tuple[int, bytes]] = []

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = int(offset)
        elif whence == 1:
            self._pos += int(offset)
        else:
            self._pos = self._size() + int(offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _size(self) -> int:
        try:
            size = os.fstat(self._f.fileno()).st_size
        except OSError:
            size = 0
        return max([size] + [o + len(b) for o, b in self._overlay])

    def _record(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc

    def write(self, b) -> int:
        data = bytes(b)
        if self.error is None:
            try:
                self._f.seek(self._pos)
                view, done = memoryview(data), 0
                while done < len(data):
                    n = self._f.write(view[done:])
                    if not n:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += n
            except OSError as exc:
                self._record(exc)
        if self.error is not None:
            self._overlay.append((self._pos, data))
        self._pos += len(data)
        return len(data)

    def readinto(self, b) -> int:
        n = len(b)
        try:
            self._f.seek(self._pos)
            data = self._f.read(n) or b""
        except OSError as exc:
            self._record(exc)
            data = b""
        buf = bytearray(n)
        buf[: len(data)] = data
        end = len(data)
        for offset, chunk in self._overlay:
            lo, hi = max(offset, self._pos), min(offset + len(chunk), self._pos + n)
            if lo < hi:
                buf[lo - self._pos: hi - self._pos] = chunk[lo - offset: hi - offset]
                end = max(end, hi - self._pos)
        b[:end] = buf[:end]
        self._pos += end
        return end

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else int(size)
        if self.error is None:
            try:
                self._f.truncate(size)
            except OSError as exc:
                self._record(exc)
        return size

    def flush(self) -> None:  # unbuffered: every write reached the OS already
        pass

    def close(self) -> None:
        if not self._f.closed:
            try:
                self._f.close()
            except OSError as exc:
                self._record(exc)
        super().close()


@contextlib.contextmanager
def h5_output(path: str | os.PathLike) -> Iterator:
    """An ``h5py.File`` opened for writing ``path`` whose write errors surface as Python exceptions.

    Use inside :func:`atomic_path` (``path`` is then the temporary file). A write error raises
    :class:`OutputError` after HDF5 has closed the file; call :func:`h5_check` between large writes
    to stop early.
    """
    import h5py

    path = Path(path)
    raw = _FailSafeFile(path)
    try:
        with h5py.File(raw, "w") as h5:
            h5.cellinr_output = raw
            yield h5
    finally:
        raw.close()
        if raw.error is not None:
            raise write_error(raw.error, path) from None


def h5_check(h5) -> None:
    """Raise the recorded write error of an :func:`h5_output` file now (HDF5 then closes it cleanly)."""
    raw = getattr(h5, "cellinr_output", None)
    if raw is not None and raw.error is not None:
        raise write_error(raw.error, raw.path)


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically; serialised in memory so a write error is a Python error."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """``safetensors.torch.save_file`` atomically, with the uniform file mode."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata=metadata))
