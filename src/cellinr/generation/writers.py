"""Per-format writers of generated sequences: each receives the frames of one sequence, one at a time.

A writer is made per sequence and output format by :func:`make_writers`, gets ``write(k, frame)`` for
k = 0 .. T-1 in order, then ``close()`` (the files become visible atomically, and it returns what it
wrote) or ``abort()`` (a failure: nothing partial is left). A *frame* is a
:class:`cellinr.geometry.sparse_frame.SparseFrame` or :class:`cellinr.geometry.grid.DenseFrame`; writers pull
what they need from it: ``mask_slab(z0, z1)`` / ``sdf_slab(z0, z1)`` for z-slabs (``frame.slabs(n)``
iterates slab ranges of about n planes, whole bricks), or ``frame.sdf`` for the whole volume (meshes).
So a mask TIFF is streamed page by page and never held whole: memory stays bounded by one slab.

Adding a format is one more subclass of :class:`FrameWriter` and one entry in :data:`WRITERS`
(``runner.FORMATS`` follows it).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr._util.native_writers import h5_check

#: Bytes of one HDF5 chunk at most (whole frames up to 256^3 float32; slabs of z-planes beyond).
HDF5_CHUNK_BYTES = 2**26


@dataclass
class SequenceContext:
    """What every writer of one sequence knows."""

    out: Path
    name: str
    frames: int
    dims: tuple[int, int, int]
    spacing: tuple[float, float, float] | None
    frame_interval: float | None
    sdf_unit: float
    model_hash: str
    reference_layout: bool = False
    mesh_format: str = "ply"


class FrameWriter:
    """Base class: one output format of one sequence. Subclasses set ``format`` and implement the three calls."""

    format = ""

    def __init__(self, ctx: SequenceContext):
        self.ctx = ctx

    def write(self, k: int, frame) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> dict:
        """Commit the files; returns ``{format: relative path or list of paths}``."""
        raise NotImplementedError  # pragma: no cover - interface

    def abort(self) -> None:
        """Discard partial output (called on any failure before :meth:`close`)."""


class _PageStream:
    """Writes a TIFF whose pages arrive one call at a time (tifffile pulls them from a queue in a thread).

    tifffile writes an ImageJ hyperstack from an iterator of pages; a background thread runs that
    write while the caller pushes pages, so the whole stack never exists in memory (and zlib
    compression, which releases the GIL, overlaps the network evaluation). The file is written to
    a temporary sibling and renamed by :meth:`close`.
    """

    _END = object()

    def __init__(self, path: Path, *, shape, axes: str, spacing, frame_interval):
        import tifffile

        from cellinr._util.outputs import atomic_path

        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        metadata: dict = {"axes": axes}
        resolution = None
        if spacing is not None:  # as cellinr.io.tiff.write_tiff stores it
            spacing = tuple(float(s) for s in spacing)
            metadata.update(unit="um")
            if len(spacing) == 3 and "Z" in axes:
                metadata.update(spacing=spacing[0])
            resolution = (1.0 / spacing[-1], 1.0 / spacing[-2])
        if frame_interval is not None:
            metadata.update(finterval=float(frame_interval) * 60.0, tunit="sec")
        self._queue: queue.Queue = queue.Queue(maxsize=4)  # slabs in flight: bounds the memory
        self._error: BaseException | None = None
        self._aborted = False

        def pages():
            while True:
                item = self._queue.get()
                if item is self._END:
                    return
                if item is None:
                    raise RuntimeError("aborted")
                yield from item

        def run():
            try:
                tifffile.imwrite(self._tmp, pages(), shape=tuple(shape), dtype=np.uint8, imagej=True,
                                 metadata=metadata, resolution=resolution, compression="zlib")
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
                with contextlib.suppress(queue.Empty):
                    while True:  # unblock a producer waiting on a full queue
                        self._queue.get_nowait()

        self._thread = threading.Thread(target=run, name=f"tiff-{self.path.name}", daemon=True)
        self._thread.start()

    def push(self, planes: np.ndarray) -> None:
        """Queue (n, Y, X) uint8 planes (pages in file order)."""
        if self._error is not None:
            self._raise()
        self._queue.put(np.ascontiguousarray(planes, np.uint8))

    def _raise(self):
        error = self._error
        self.abort()
        raise error

    def close(self) -> None:
        self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            self._raise()
        self._atomic.__exit__(None, None, None)  # rename into place

    def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=5)
            self._thread.join(timeout=30)
        with contextlib.suppress(BaseException):
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temporary file


class TiffMaskWriter(FrameWriter):
    """``<name>.tif``: the binary mask (T, Z, Y, X) uint8, streamed page by page."""

    format = "tiff"

    def __init__(self, ctx: SequenceContext):
        super().__init__(ctx)
        self.file = f"{ctx.name}.tif"
        self._stream = _PageStream(ctx.out / self.file, shape=(ctx.frames, *ctx.dims), axes="TZYX",
                                   spacing=ctx.spacing, frame_interval=ctx.frame_interval)

    def write(self, k: int, frame) -> None:
        for z0, z1 in frame.slabs():
            self._stream.push(frame.mask_slab(z0, z1))

    def close(self) -> dict:
        self._stream.close()
        return {"tiff": self.file}

    def abort(self) -> None:
        self._stream.abort()


class MipWriter(FrameWriter):
    """``<name>_mip.tif``: maximum projection of the mask along Z, (T, Y, X) uint8, one page per frame."""

    format = "mip"

    def __init__(self, ctx: SequenceContext):
        super().__init__(ctx)
        self.file = f"{ctx.name}_mip.tif"
        self._stream = _PageStream(ctx.out / self.file, shape=(ctx.frames, *ctx.dims[1:]), axes="TYX",
                                   spacing=ctx.spacing, frame_interval=ctx.frame_interval)

    def write(self, k: int, frame) -> None:
        mip = np.zeros(self.ctx.dims[1:], np.uint8)
        for z0, z1 in frame.slabs():
            np.maximum(mip, frame.mask_slab(z0, z1).max(axis=0), out=mip)
        self._stream.push(mip[None])

    def close(self) -> dict:
        self._stream.close()
        return {"mip": self.file}

    def abort(self) -> None:
        self._stream.abort()


class SdfWriter(FrameWriter):
    """``<name>.h5``: the SDF (T, Z, Y, X) float32, dataset ``sdf`` (or the reference's ``sdf_vid``, X, Y, Z, T).

    Written in slabs of whole HDF5 chunks (z-planes of at most :data:`HDF5_CHUNK_BYTES`), gzip level 4.
    """

    format = "sdf"

    def __init__(self, ctx: SequenceContext):
        from cellinr._util.native_writers import h5_output
        from cellinr._util.outputs import atomic_path

        super().__init__(ctx)
        self.file = f"{ctx.name}.h5"
        self._atomic = atomic_path(ctx.out / self.file)
        # write errors (a full disk) surface as Python errors instead of crashing inside HDF5
        self._h5_file = h5_output(self._atomic.__enter__())
        self._h5 = self._h5_file.__enter__()
        Z, Y, X = ctx.dims
        plane = Y * X * 4
        self._planes = Z if Z * plane <= HDF5_CHUNK_BYTES else max(8, (HDF5_CHUNK_BYTES // plane) // 8 * 8)
        self._planes = min(self._planes, Z)
        shape, chunks = (ctx.frames, Z, Y, X), (1, self._planes, Y, X)
        if ctx.reference_layout:  # MATLAB-written files: h5py sees the axes reversed
            shape, chunks = (X, Y, Z, ctx.frames), (X, Y, self._planes, 1)
        self._dset = self._h5.create_dataset("sdf_vid" if ctx.reference_layout else "sdf", shape=shape,
                                             dtype="float32", chunks=chunks, compression="gzip",
                                             compression_opts=4, shuffle=True, track_times=False)
        self._dset.attrs["axes"] = "XYZT" if ctx.reference_layout else "TZYX"
        self._dset.attrs["model_hash"] = str(ctx.model_hash or "")
        self._dset.attrs["sdf_unit_in_coords"] = ctx.sdf_unit
        if ctx.frame_interval is not None:
            self._dset.attrs["frame_interval_min"] = ctx.frame_interval

    def write(self, k: int, frame) -> None:
        Z = self.ctx.dims[0]
        for z0 in range(0, Z, self._planes):
            z1 = min(z0 + self._planes, Z)
            slab = frame.sdf_slab(z0, z1)
            if self.ctx.reference_layout:
                self._dset[:, :, z0:z1, k] = slab.transpose(2, 1, 0)
            else:
                self._dset[k, z0:z1] = slab
            h5_check(self._h5)  # a full disk stops the sequence now, not after its last frame

    def close(self) -> dict:
        self._h5_file.__exit__(None, None, None)
        self._atomic.__exit__(None, None, None)
        return {"sdf": self.file}

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self._h5_file.__exit__(RuntimeError, RuntimeError("aborted"), None)
        with contextlib.suppress(BaseException):
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)


class MeshWriter(FrameWriter):
    """``meshes/<name>/t<k>.<ply|obj|stl>``: the zero level set per frame, vertices x, y, z in microns.

    Marching cubes needs the whole frame, so this writer materialises the (Z, Y, X) float32 volume.
    """

    format = "mesh"

    def __init__(self, ctx: SequenceContext):
        super().__init__(ctx)
        self.files: list[str] = []

    def write(self, k: int, frame) -> None:
        from cellinr.geometry.mesh import mesh_from_sdf
        from cellinr.io.meshes import write_mesh

        mesh = mesh_from_sdf(frame.sdf, spacing=self.ctx.spacing or (1.0, 1.0, 1.0))
        rel = f"meshes/{self.ctx.name}/t{k:04d}.{self.ctx.mesh_format}"
        write_mesh(self.ctx.out / rel, mesh, fmt=self.ctx.mesh_format)
        self.files.append(rel)

    def close(self) -> dict:
        return {"mesh": list(self.files)}


class OmeZarrWriter(FrameWriter):
    """``<name>.ome.zarr``: the mask as an OME-Zarr store (label image ``cells``, multiscale), frame by frame.

    The store is built in a temporary folder and renamed into place by :meth:`close`.
    """

    format = "ome-zarr"

    def __init__(self, ctx: SequenceContext):
        from cellinr.io.omezarr import sequence_writer

        super().__init__(ctx)
        self.file = f"{ctx.name}.ome.zarr"
        self._writer = sequence_writer(ctx.out / self.file, n_frames=ctx.frames, dims=ctx.dims,
                                       spacing=ctx.spacing, frame_interval=ctx.frame_interval)

    def write(self, k: int, frame) -> None:
        mask = np.zeros(self.ctx.dims, np.uint8)
        for z0, z1 in frame.slabs():
            mask[z0:z1] = frame.mask_slab(z0, z1)
        self._writer.write_mask(k, mask)

    def close(self) -> dict:
        self._writer.close()
        return {"ome-zarr": self.file}

    def abort(self) -> None:
        self._writer.abort()


#: Writer class per output format name.
WRITERS: dict[str, type[FrameWriter]] = {
    "tiff": TiffMaskWriter,
    "sdf": SdfWriter,
    "mesh": MeshWriter,
    "mip": MipWriter,
    "ome-zarr": OmeZarrWriter,
}


def make_writers(formats, ctx: SequenceContext) -> list[FrameWriter]:
    """One writer per format, in the order of ``formats``; on failure the ones made are aborted."""
    writers: list[FrameWriter] = []
    try:
        for fmt in formats:
            writers.append(WRITERS[fmt](ctx))
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return writers


def memory_per_frame(formats, dims: tuple[int, int, int]) -> int:
    """Bytes the writers of ``formats`` hold while writing one frame (slabs, queues, mesh volumes)."""
    Z, Y, X = dims
    plane = Y * X
    need = 0
    if "tiff" in formats or "mip" in formats:
        need += 5 * 8 * plane + 8 * plane * 6  # queued slabs of 8 planes and one slab (mask + its float values)
    if "sdf" in formats:
        planes = Z if Z * plane * 4 <= HDF5_CHUNK_BYTES else max(8, (HDF5_CHUNK_BYTES // (plane * 4)) // 8 * 8)
        need += 3 * min(planes, Z) * plane * 4  # the slab, its compressed chunk and HDF5's copy
    if "mesh" in formats:
        need += 4 * Z * Y * X * 4  # the frame, its padded copy and marching-cubes work arrays
    if "ome-zarr" in formats:
        need += 2 * Z * Y * X  # the frame's mask and its first downsampled level
    return need
