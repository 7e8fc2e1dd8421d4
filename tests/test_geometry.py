"""Grid evaluation (dense, fast with measured bounds, and the previous fast-v1), marching cubes, meshes, MIPs.

Analytic signed distance fields give the ground truth: for an exact SDF the fast evaluations must
reproduce the dense mask voxel for voxel; for approximate ones (a scaled-sphere "ellipsoid", which
is not 1-Lipschitz-exact) the previous method may differ on at most 0.1 % of voxels next to the
surface, the measured bound of the current one must still match exactly.
"""

import numpy as np
import pytest
import torch
from scipy import ndimage

from cellinr.geometry.bands import FastEvaluator, evaluate_fast
from cellinr.geometry.fast_v1 import evaluate_fast_v1
from cellinr.geometry.grid import (
    axis_coords,
    evaluate_dense,
    grid_points,
    time_coords,
)
from cellinr.geometry.mesh import mesh_from_sdf
from cellinr.geometry.project import max_projection
from cellinr.io.meshes import read_mesh, write_mesh

UNIT = 0.25  # one SDF unit in coordinate units for the analytic fields below


def sphere(radius, centre=(0.0, 0.0, 0.0)):
    c = torch.tensor(centre, dtype=torch.float32)
    return lambda p: ((p[:, :3] - c).norm(dim=1) - radius) / UNIT


def ellipsoid(radii):
    """Scaled-sphere approximation: right sign, distance only approximately (gradient norm up to 2.2)."""
    r = torch.tensor(radii, dtype=torch.float32)
    return lambda p: ((p[:, :3] / r).norm(dim=1) - 1.0) * r.min() / UNIT


def two_spheres(p):
    a = (p[:, :3] - torch.tensor([-0.4, 0.0, 0.1])).norm(dim=1) - 0.3
    b = (p[:, :3] - torch.tensor([0.45, 0.1, -0.1])).norm(dim=1) - 0.2
    return torch.minimum(a, b) / UNIT


def capsule(radius, a=(-0.7, -0.5, -0.2), b=(0.6, 0.55, 0.3)):
    """A thin rod (a filopodium), exact SDF of a segment swept by a ball."""
    a, b = torch.tensor(a), torch.tensor(b)

    def f(p):
        ab = b - a
        h = ((p[:, :3] - a) @ ab / (ab @ ab)).clamp(0, 1)
        return ((p[:, :3] - a - h[:, None] * ab).norm(dim=1) - radius) / UNIT

    return f


def moving_sphere(p):
    """Radius grows with time: checks that the t column reaches the field."""
    return (p[:, :3].norm(dim=1) - (0.4 + 0.2 * p[:, 3])) / UNIT


def near_surface(mask, voxels=1):
    """Voxels within ``voxels`` of the boundary between inside and outside."""
    inner = ndimage.binary_erosion(mask, iterations=voxels, border_value=0)
    outer = ndimage.binary_dilation(mask, iterations=voxels)
    return outer & ~inner


def assert_masks_agree(dense, fast, exact: bool):
    a, b = dense <= 0, fast <= 0
    differ = a != b
    if exact:
        assert not differ.any(), f"{differ.sum()} voxels differ"
    assert differ.mean() <= 1e-3
    assert not (differ & ~near_surface(a)).any(), "a differing voxel is not next to the surface"


def test_axis_and_time_coordinates():
    np.testing.assert_allclose(axis_coords(5), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_array_equal(axis_coords(1), [0.0])
    np.testing.assert_allclose(time_coords(3), [-1, 0, 1])
    pts = grid_points((2, 3, 4), t=0.5)
    assert pts.shape == (24, 4) and pts.dtype == np.float32
    # C order of (Z, Y, X): x changes fastest, z slowest
    np.testing.assert_allclose(pts[1], [-1 + 2 / 3, -1, -1, 0.5])
    np.testing.assert_allclose(pts[4], [-1, 0, -1, 0.5])
    np.testing.assert_allclose(pts[12], [-1, -1, 1, 0.5])


def test_dense_orientation_matches_array_axes():
    # a field that is x: increases along the last array axis only
    res = evaluate_dense(lambda p: p[:, 0], (3, 4, 5))
    assert res.queries == 60
    np.testing.assert_allclose(res.sdf[1, 2], axis_coords(5), atol=1e-6)
    assert np.ptp(res.sdf, axis=(0, 1)).max() == 0


CASES = [
    (sphere(0.5, (0.1, -0.05, 0.02)), (64, 64, 64), True),
    (sphere(0.3), (37, 50, 23), True),
    (two_spheres, (48, 56, 64), True),
    (capsule(0.03), (72, 72, 72), True),  # ~1 voxel radius
    (ellipsoid((0.7, 0.4, 0.3)), (64, 64, 64), False),
    (sphere(0.5), (1, 40, 41), True),
]
CASE_IDS = ["sphere", "noncube", "two-spheres", "thin-capsule", "ellipsoid-approx", "single-slice"]


@pytest.mark.parametrize("field, dims, exact", CASES, ids=CASE_IDS)
def test_fast_matches_dense_on_analytic_fields(field, dims, exact):
    dense = evaluate_dense(field, dims)
    fast = evaluate_fast(field, dims, sdf_unit_in_coords=UNIT)
    assert fast.sdf.shape == dims and fast.sdf.dtype == np.float32
    # the measured bound also covers the ellipsoid, whose gradient norm reaches 2.2
    assert_masks_agree(dense.sdf, fast.sdf, exact=True)
    np.testing.assert_array_equal(np.sign(fast.sdf), np.sign(dense.sdf))
    np.testing.assert_array_equal(fast.sdf[fast.exact], dense.sdf[fast.exact])  # bit for bit
    assert dense.exact is None and 0 < fast.exact.sum() < fast.sdf.size / 4
    v1 = evaluate_fast_v1(field, dims, sdf_unit_in_coords=UNIT)
    assert_masks_agree(dense.sdf, v1.sdf, exact)
    assert fast.queries < v1.queries  # the narrower band


def test_v1_keeps_exact_values_near_the_surface():
    field, dims = two_spheres, (48, 56, 64)
    dense, v1 = evaluate_dense(field, dims), evaluate_fast_v1(field, dims, sdf_unit_in_coords=UNIT)
    band = np.abs(dense.sdf) * UNIT < 2 * (2 / (max(dims) - 1))
    np.testing.assert_allclose(v1.sdf[band], dense.sdf[band], rtol=1e-6, atol=1e-6)
    assert v1.exact[band].all()


def test_fast_uses_time_and_saves_queries():
    dims = (96, 96, 96)
    for t in (-1.0, 1.0):
        dense = evaluate_dense(moving_sphere, dims, t=t)
        fast = evaluate_fast(moving_sphere, dims, sdf_unit_in_coords=UNIT, t=t)
        assert_masks_agree(dense.sdf, fast.sdf, exact=True)
        assert dense.queries == 96**3
        assert fast.queries < dense.queries / 20
    assert (evaluate_fast(moving_sphere, dims, sdf_unit_in_coords=UNIT, t=1.0).sdf <= 0).sum() > (
        evaluate_fast(moving_sphere, dims, sdf_unit_in_coords=UNIT, t=-1.0).sdf <= 0).sum() * 10


def test_time_coherent_frames_equal_dense_and_save_queries():
    """A sequence: later frames start from earlier ones (fewer queries), every mask still equals dense."""
    dims = (64, 64, 64)
    times = np.linspace(-1, 1, 30)
    warm = FastEvaluator(moving_sphere, dims, sdf_unit_in_coords=UNIT)
    cold = FastEvaluator(moving_sphere, dims, sdf_unit_in_coords=UNIT, coherence=False)
    warm_q = cold_q = 0
    for k, t in enumerate(times):
        a, b = warm.frame(t), cold.frame(t)
        warm_q += a.queries
        cold_q += b.queries
        if k in (0, 14, 29):
            dense = evaluate_dense(moving_sphere, dims, t=t).sdf
            np.testing.assert_array_equal(a.mask_slab(0, 64).astype(bool), dense <= 0)
        np.testing.assert_array_equal(a.sdf <= 0, b.sdf <= 0)
    assert warm.time_lipschitz is not None and warm.time_lipschitz >= 0.2 * 2 / UNIT * UNIT  # dr/dt = 0.2
    assert warm_q < 0.95 * cold_q  # measured: 0.91


def test_bound_violation_is_detected_and_the_frame_redone():
    """A field steeper than the floor (slope 3): the first pass's bound is too small, the check catches it."""
    steep = lambda p: 3.0 * ((p[:, :3] - torch.tensor([0.05, 0.0, 0.0])).norm(dim=1) - 0.4) / UNIT
    dims = (64, 64, 64)
    ev = FastEvaluator(steep, dims, sdf_unit_in_coords=UNIT)
    frame = ev.frame(0.0)
    assert ev.redone >= 1 and ev.lipschitz(2) >= 1.25 * 2.9
    np.testing.assert_array_equal(frame.sdf <= 0, evaluate_dense(steep, dims).sdf <= 0)


def test_sparse_frame_slabs_and_counts():
    dims = (37, 50, 23)
    frame = FastEvaluator(two_spheres, dims, sdf_unit_in_coords=UNIT).frame(0.0)
    full = frame.sdf
    parts = np.concatenate([frame.mask_slab(a, b) for a, b in frame.slabs(5)])
    np.testing.assert_array_equal(parts, (full <= 0).astype(np.uint8))
    np.testing.assert_array_equal(frame.sdf_slab(9, 20), full[9:20])
    assert frame.count_inside() == (full <= 0).sum() > 0
    assert frame.exact_count == frame.exact.sum() and frame.surface_bricks > 0
    with pytest.raises(ValueError, match="slab"):
        frame.sdf_slab(10, 40)


def test_chunk_bounds_each_network_call():
    calls = []

    def field(p):
        calls.append(p.shape[0])
        return sphere(0.4)(p)

    for fast in (evaluate_fast, evaluate_fast_v1):
        calls.clear()
        a = fast(field, (40, 40, 40), sdf_unit_in_coords=UNIT, chunk=1000)
        assert max(calls) <= 1000 and sum(calls) == a.queries
        calls.clear()
        b = fast(field, (40, 40, 40), sdf_unit_in_coords=UNIT, chunk=7)
        assert max(calls) <= 7
        np.testing.assert_array_equal(a.sdf, b.sdf)
    calls.clear()
    d = evaluate_dense(field, (40, 40, 40), chunk=999)
    assert max(calls) <= 999 and d.queries == 40**3


def test_coarse_levels_agree_and_validate():
    dense = evaluate_dense(two_spheres, (50, 50, 50))
    for coarse in (1, 2, 4, 16):
        fast = evaluate_fast_v1(two_spheres, (50, 50, 50), sdf_unit_in_coords=UNIT, coarse=coarse)
        assert_masks_agree(dense.sdf, fast.sdf, exact=True)
    with pytest.raises(ValueError, match="power of two"):
        evaluate_fast_v1(two_spheres, (8, 8, 8), sdf_unit_in_coords=UNIT, coarse=3)
    for fast in (evaluate_fast, evaluate_fast_v1):
        with pytest.raises(ValueError, match="sdf_unit_in_coords"):
            fast(two_spheres, (8, 8, 8), sdf_unit_in_coords=0)
    with pytest.raises(ValueError, match="safety"):
        evaluate_fast(two_spheres, (8, 8, 8), sdf_unit_in_coords=UNIT, safety=0.5)
    with pytest.raises(ValueError, match="dims"):
        evaluate_dense(two_spheres, (8, 0, 8))


def test_degenerate_grids_single_voxel_and_line():
    for dims in ((1, 1, 1), (1, 1, 20), (20, 1, 1), (3, 1, 17)):
        dense = evaluate_dense(sphere(0.5), dims)
        for fast in (evaluate_fast, evaluate_fast_v1):
            res = fast(sphere(0.5), dims, sdf_unit_in_coords=UNIT)
            np.testing.assert_array_equal(res.sdf <= 0, dense.sdf <= 0)
            assert res.sdf.shape == dims
    assert (evaluate_fast(sphere(0.5), (1, 1, 1), sdf_unit_in_coords=UNIT).sdf <= 0).all()  # the centre


def test_fast_fills_a_field_without_surface():
    res = evaluate_fast(lambda p: torch.full((p.shape[0],), 10.0), (33, 33, 33), sdf_unit_in_coords=UNIT)
    assert (res.sdf == 10.0).all() and not res.exact.any()
    assert res.queries == 5**3  # one centre per brick of 8^3 voxels
    res = evaluate_fast_v1(lambda p: torch.full((p.shape[0],), 10.0), (33, 33, 33), sdf_unit_in_coords=UNIT)
    assert (res.sdf == 10.0).all()
    assert res.queries == 5**3 + 4**3  # the coarse lattice and the block centres only


def _sphere_volume(shape, spacing, centre, radius):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre))) - radius


def test_mesh_of_sphere_in_microns(tmp_path):
    spacing = (1.0, 0.5, 0.25)  # z, y, x microns
    centre = (20.0, 15.0, 12.0)  # z, y, x microns
    sdf = _sphere_volume((41, 61, 97), spacing, centre, 8.0)
    mesh = mesh_from_sdf(sdf, spacing=spacing)
    assert mesh.volume() == pytest.approx(4 / 3 * np.pi * 8**3, rel=0.02)
    assert mesh.area() == pytest.approx(4 * np.pi * 8**2, rel=0.02)
    np.testing.assert_allclose(mesh.vertices_xyz.mean(0), centre[::-1], atol=0.05)  # x, y, z
    for fmt in ("ply", "obj", "stl"):
        path = write_mesh(tmp_path / f"s.{fmt}", mesh)
        back = read_mesh(path)
        assert back.volume() == pytest.approx(mesh.volume(), rel=1e-5)  # outward normals survive
        assert back.area() == pytest.approx(mesh.area(), rel=1e-5)
        np.testing.assert_allclose(back.vertices_xyz.min(0), mesh.vertices_xyz.min(0), atol=1e-4)
    assert (tmp_path / "s.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    with pytest.raises(ValueError, match="mesh format"):
        write_mesh(tmp_path / "s.off", mesh)


def test_mesh_closed_at_border_and_empty():
    sdf = _sphere_volume((20, 20, 20), (1, 1, 1), (0, 10, 10), 6.0)  # cut by the z = 0 border
    mesh = mesh_from_sdf(sdf)
    half_ball = 2 / 3 * np.pi * 6**3
    assert mesh.volume() == pytest.approx(half_ball, rel=0.06)
    assert mesh_from_sdf(np.ones((5, 5, 5))).empty
    assert mesh_from_sdf(-np.ones((5, 5, 5))).volume() == pytest.approx(5**3, rel=0.1)  # closed by the pad


def test_max_projection():
    data = np.zeros((2, 3, 4, 5), np.uint8)
    data[0, 1, 2, 3] = 1
    data[1, 2, 0, 0] = 1
    mip, axes = max_projection(data)
    assert axes == "TYX" and mip.shape == (2, 4, 5)
    assert mip[0, 2, 3] == 1 and mip[1, 0, 0] == 1 and mip.sum() == 2
    side, axes = max_projection(data, along="x")
    assert axes == "TZY" and side.shape == (2, 3, 4) and side[0, 1, 2] == 1
    with pytest.raises(ValueError, match="not among axes"):
        max_projection(data[0], axes="ZYX", along="T")


def test_polish_makes_meshes_equal_dense_meshes():
    dims = (40, 44, 48)
    for field in (two_spheres, capsule(0.05)):
        dense = evaluate_dense(field, dims).sdf
        ev = FastEvaluator(field, dims, sdf_unit_in_coords=UNIT)
        frame = ev.frame(0.0)
        before = frame.exact_count
        added = ev.polish(frame)
        assert frame.exact_count == before + added
        a, b = mesh_from_sdf(dense), mesh_from_sdf(frame.sdf)
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(a.vertices_zyx, b.vertices_zyx)
        assert ev.polish(frame) == 0  # nothing left to do
