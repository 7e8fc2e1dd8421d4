"""Triangle meshes in memory and as PLY / OBJ / STL files.

:class:`Mesh` keeps vertices (z, y, x) in microns like every array of this package. Only the file
writers speak x/y/z: they write each vertex as (x, y, z) in microns, with faces wound so normals
point outwards (right-handed x, y, z).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr._util.atomic import atomic_path

MESH_FORMATS = ("ply", "obj", "stl")


@dataclass
class Mesh:
    """A triangle mesh.

    Attributes
    ----------
    vertices_zyx : (V, 3) float32 ndarray
        Vertex positions (z, y, x) in microns from the grid's first voxel centre.
    faces : (F, 3) int64 ndarray
        Vertex indices, counter-clockwise seen from outside in (x, y, z) space.
    """

    vertices_zyx: np.ndarray
    faces: np.ndarray

    @property
    def vertices_xyz(self) -> np.ndarray:
        """(V, 3) vertex positions (x, y, z) in microns."""
        return np.ascontiguousarray(self.vertices_zyx[:, ::-1])

    @property
    def empty(self) -> bool:
        return self.faces.shape[0] == 0

    def area(self) -> float:
        """Surface area in square microns."""
        v = self.vertices_xyz.astype(np.float64)
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())

    def volume(self) -> float:
        """Signed enclosed volume in cubic microns (positive for outward-facing triangles)."""
        v = self.vertices_xyz.astype(np.float64)
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def write_mesh(path: str | os.PathLike, mesh: Mesh, *, fmt: str | None = None) -> Path:
    """Write ``mesh`` as binary PLY, OBJ or binary STL (by ``fmt`` or the file suffix), atomically.

    Vertices are written as (x, y, z) in microns.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"mesh format must be one of {', '.join(MESH_FORMATS)}, got {fmt!r}")
    with atomic_path(path) as tmp:
        {"ply": _write_ply, "obj": _write_obj, "stl": _write_stl}[fmt](tmp, mesh)
    return path


def read_mesh(path: str | os.PathLike) -> Mesh:
    """Read a mesh written by :func:`write_mesh` (binary PLY, OBJ, binary STL; STL vertices are not merged)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt == "ply":
        return _read_ply(path)
    if fmt == "obj":
        return _read_obj(path)
    if fmt == "stl":
        return _read_stl(path)
    raise ValueError(f"{path}: unknown mesh format {fmt!r}")


def _write_ply(path: Path, mesh: Mesh) -> None:
    v = mesh.vertices_xyz.astype("<f4")
    f = np.zeros(mesh.faces.shape[0], dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    f["n"] = 3
    f["idx"] = mesh.faces
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment cellinr mesh, x y z in microns\n"
        f"element vertex {v.shape[0]}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {f.shape[0]}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(f.tobytes())


def _read_ply(path: Path) -> Mesh:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    nv = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    nf = int(next(line.split()[2] for line in header if line.startswith("element face")))
    v = np.frombuffer(data, "<f4", count=nv * 3, offset=end).reshape(nv, 3)
    f = np.frombuffer(data, [("n", "u1"), ("idx", "<i4", (3,))], count=nf, offset=end + nv * 12)
    return Mesh(np.ascontiguousarray(v[:, ::-1]), f["idx"].astype(np.int64))


def _write_obj(path: Path, mesh: Mesh) -> None:
    import io

    buf = io.StringIO()
    buf.write("# cellinr mesh, x y z in microns\n")
    np.savetxt(buf, mesh.vertices_xyz, fmt="v %.6f %.6f %.6f")
    np.savetxt(buf, mesh.faces + 1, fmt="f %d %d %d")
    path.write_text(buf.getvalue(), encoding="ascii")


def _read_obj(path: Path) -> Mesh:
    verts, faces = [], []
    for line in path.read_text(encoding="ascii").splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            faces.append([int(x.split("/")[0]) - 1 for x in line.split()[1:4]])
    v = np.array(verts, np.float32).reshape(-1, 3)
    return Mesh(np.ascontiguousarray(v[:, ::-1]), np.array(faces, np.int64).reshape(-1, 3))


_STL_DTYPE = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def _write_stl(path: Path, mesh: Mesh) -> None:
    v = mesh.vertices_xyz.astype(np.float64)
    tri = v[mesh.faces]  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    rec = np.zeros(tri.shape[0], _STL_DTYPE)
    rec["normal"] = normal
    rec["v"] = tri
    header = b"cellinr mesh, x y z in microns".ljust(80, b" ")
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(np.uint32(rec.shape[0]).astype("<u4").tobytes())
        fh.write(rec.tobytes())


def _read_stl(path: Path) -> Mesh:
    data = path.read_bytes()
    n = int(np.frombuffer(data, "<u4", count=1, offset=80)[0])
    rec = np.frombuffer(data, _STL_DTYPE, count=n, offset=84)
    v = rec["v"].reshape(-1, 3)
    return Mesh(np.ascontiguousarray(v[:, ::-1]), np.arange(3 * n, dtype=np.int64).reshape(n, 3))
