"""Principal frames, rotation hypotheses, volume rotation and SDF alignment (cellinr.geometry.orientation)."""

import math

import numpy as np
import pytest
import torch

from cellinr.geometry import orientation as o
from cellinr.nn.rotation import random_rotations, rotation_angle

N = 24


def _points(n=N):
    c = np.linspace(-1, 1, n)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], 1)


def _shape(p, radii=(0.6, 0.4, 0.25), bump=True):
    """An ellipsoid with a bump (no symmetry), as a clipped SDF-like field (negative inside)."""
    e = np.sqrt(((p / np.asarray(radii)) ** 2).sum(1)) - 1
    if bump:
        e = np.minimum(e, np.linalg.norm(p - np.array([0.4, 0.2, 0.1]), axis=1) - 0.2)
    return np.clip(e * 0.5, -1, 1).astype(np.float32)


def _rotated(a, n=N, **kw):
    """S(A^T p) on the grid: row vectors p @ A."""
    return _shape(_points(n) @ a, **kw).reshape(n, n, n)


def _deg(a, b):
    return math.degrees(float(rotation_angle(torch.as_tensor(a), torch.as_tensor(b))))


def _haar(k, seed):
    return random_rotations(k, torch.Generator().manual_seed(seed)).double().numpy()


def test_second_moments_of_a_box():
    m = np.zeros((N, N, N), bool)
    m[8:16, 4:20, 10:14] = True  # z 8 voxels, y 16, x 4
    c, cov, n = o.second_moments(m)
    assert n == 8 * 16 * 4
    step = 2 / (N - 1)
    # uniform grid of k points: variance (k^2 - 1) / 12 * step^2
    np.testing.assert_allclose(np.diag(cov), [(k * k - 1) / 12 * step**2 for k in (4, 16, 8)], rtol=1e-9)
    np.testing.assert_allclose(c, [(-1 + 11.5 * step), (-1 + 11.5 * step), (-1 + 11.5 * step)], atol=1e-12)
    # an SDF gives the same as its mask; a sequence pools its frames
    sdf = np.where(m, -0.5, 0.5).astype(np.float32)
    np.testing.assert_allclose(o.second_moments(sdf)[1], cov)
    np.testing.assert_allclose(o.second_moments(np.stack([sdf, sdf]))[1], cov)


def test_principal_frame_is_rotation_equivariant_up_to_sign_flips():
    e0, w0, _ = o.principal_frame(_rotated(np.eye(3)))
    assert np.isclose(np.linalg.det(e0), 1) and np.all(np.diff(w0) < 0)
    for a in _haar(3, 0):
        e, w, _ = o.principal_frame(_rotated(a))
        np.testing.assert_allclose(w, w0, rtol=0.12)  # voxelisation at 24^3
        s = e0.T @ a.T @ e  # E = A E0 S
        assert min(np.abs(s - f).max() for f in o.sign_flips()) < 0.15


def test_sign_flips_and_hypotheses_are_rotations():
    f = o.sign_flips()
    assert len(f) == 4 and np.allclose(np.linalg.det(f), 1)
    for kind, k in (("distinct", 4), ("prolate", 24), ("oblate", 24), ("spherical", 50)):
        h = o.frame_hypotheses(kind, n_grid=50)
        assert h.shape == (k, 3, 3)
        np.testing.assert_allclose(h @ h.transpose(0, 2, 1), np.broadcast_to(np.eye(3), h.shape), atol=1e-6)
        np.testing.assert_allclose(np.linalg.det(h), 1, atol=1e-6)
    with pytest.raises(ValueError):
        o.frame_hypotheses("nonsense")


def test_degeneracy():
    assert o.degeneracy([3.0, 2.0, 1.0]) == "distinct"
    assert o.degeneracy([3.0, 1.0, 0.99]) == "prolate"
    assert o.degeneracy([3.0, 2.99, 1.0]) == "oblate"
    assert o.degeneracy([1.0, 0.99, 0.98]) == "spherical"


def test_so3_grid_covers_the_group():
    g = o.so3_grid(200, seed=1)
    probe = _haar(200, 5)
    # angle of P^T R for every pair: cos = (trace - 1) / 2
    cos = (np.einsum("pij,rij->pr", probe, g) - 1) / 2
    gaps = np.degrees(np.arccos(np.clip(cos.max(axis=1), -1, 1)))
    assert gaps.max() < 40  # 200 rotations: covering radius about 35 degrees
    assert _deg(g[0], g[1]) > 10  # thinned: no two neighbours


def test_rotate_volume_matches_the_analytic_rotation():
    a = _haar(1, 3)[0]
    vol = torch.as_tensor(_rotated(np.eye(3), bump=False))  # smooth: trilinear error small
    # g(q) = vol(R^T q) with R = A is S(A^T q), the rotated copy
    g = o.rotate_volume(vol, torch.as_tensor(a, dtype=torch.float32))
    want = _rotated(a, bump=False)
    # away from the border padding, the clip at 1 and the apex at the centre (kinks trilinear sampling smooths)
    inner = (np.linalg.norm(_points(), axis=1).reshape(N, N, N) < 0.9) & (np.abs(want) < 0.3)
    np.testing.assert_allclose(g.numpy()[inner], want[inner], atol=0.03)
    # batches of rotations and leading frame axes
    b = o.rotate_volume(torch.stack([vol, vol]), torch.as_tensor(np.stack([np.eye(3), a]), dtype=torch.float32))
    assert b.shape == (2, 2, N, N, N)
    np.testing.assert_allclose(b[0, 0].numpy(), vol.numpy(), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_align_recovers_large_rotations(one_thread, seed):
    ref = _rotated(np.eye(3))[None]
    for a in _haar(2, 10 + seed):
        res = o.align(_rotated(a)[None], ref, size=N, steps=40)
        # moving(R^T q) = S(A^T R^T q) = ref(q) for R = A^T
        assert _deg(res["rotation"], a.T) < 3, (res["kind"], res["loss"])


def test_align_handles_a_near_spherical_shape(one_thread):
    """Eigenvalues nearly equal (spins or the SO(3) grid are tried) and the bump fixes the rotation."""
    kw = {"radii": (0.45, 0.44, 0.43)}
    ref = _rotated(np.eye(3), **kw)[None]
    a = _haar(1, 7)[0]
    res = o.align(_rotated(a, **kw)[None], ref, size=N, steps=40, n_grid=300)
    assert "distinct" not in res["kind"] and res["hypotheses"] > 4
    assert _deg(res["rotation"], a.T) < 5


def test_initial_rotations_reference_is_identity(one_thread):
    a = _haar(2, 4)
    seqs = [_rotated(r)[None] for r in a]
    rots, _ = o.initial_rotations(seqs, size=N, steps=30)
    np.testing.assert_allclose(rots[0], np.eye(3))
    # R_1 A_1 = R_0 A_0 (both copies map to the same canonical shape)
    assert _deg(rots[1] @ a[1], rots[0] @ a[0]) < 3
    # also from (iterable, n_frames) pairs, read lazily
    rots2, _ = o.initial_rotations([(iter(list(s)), len(s)) for s in seqs], size=N, steps=30)
    np.testing.assert_allclose(rots2, rots, atol=1e-6)


def test_summarize_reads_frames_once():
    seq = np.stack([_rotated(np.eye(3))] * 5)
    s = o.summarize(iter(list(seq)), 5, size=16, n_coarse=3)
    assert s["coarse"].shape == (3, 16, 16, 16)
    np.testing.assert_allclose(s["frame"][1], o.principal_frame(seq)[1])
    np.testing.assert_array_equal(o.match_frames(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(o.match_frames(1, 3), [0, 0, 0])
