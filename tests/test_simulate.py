"""Tests of ``cellinr simulate``: the acceptance criteria of each behaviour, determinism, files, errors."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest
from scipy import ndimage

from cellinr.cli import main
from cellinr.data.simulation.phantoms import CUBE_UM, simulate, simulate_sequence
from cellinr.errors import OutputExistsError, ParameterError
from cellinr.io.tiff import read_tiff

FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


@lru_cache(maxsize=None)
def seq(kind: str, index: int, frames: int = 10, size: int = 64, seed: int = 0):
    return simulate_sequence(kind, index, frames=frames, size=size, seed=seed)


def n_components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, structure=FULL)[1])


# ---------------------------------------------------------------------------------------------------
# acceptance checks, one sequence at a time


def check_dividing(s) -> int:
    """Components 1 -> 2 (-> 3) at the recorded frames (+-1), volume change < 15 % across divisions.

    Returns the number of divisions inside the window.
    """
    truth = s.truth
    counts = [n_components(m) for m in s.masks]
    volumes = s.masks.reshape(s.frames, -1).sum(axis=1).astype(float)
    in_window = sorted((d for d in truth["divisions"] if d["frame"] is not None), key=lambda d: d["time"])
    expected = 1
    for d in in_window:
        before, expected = expected, expected + 1
        k = d["frame"]
        assert k >= 1, "divisions happen after the first frame"
        first = next(j for j, c in enumerate(counts) if c >= expected)
        assert abs(first - k) <= 1, (s.index, counts, d)
        assert counts[max(k - 2, 0)] == before
        change = abs(volumes[k] - volumes[k - 1]) / volumes[k - 1]
        assert change < 0.15, (s.index, k, change)
    assert counts[-1] == expected
    assert [f["components_voxels"] for f in truth["frames_truth"]] == counts
    # the model's count differs from the voxels' only right at a division (a gap below one voxel)
    model = [f["components"] for f in truth["frames_truth"]]
    near = {d["frame"] + j for d in in_window for j in (-1, 0, 1)}
    assert all(c == m or k in near for k, (c, m) in enumerate(zip(counts, model))), (counts, model)
    return len(in_window)


def _protrusions(s, k: int):
    """Protrusion voxels (outside the dilated ground-truth body) and skeleton end points there."""
    from skimage.morphology import skeletonize

    mask = s.masks[k] > 0
    body = s.mask(float(s.times[k]), part="body")
    body = ndimage.binary_dilation(body, iterations=2)
    prot = mask & ~body
    skel = skeletonize(mask) > 0
    neighbours = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant") - 1
    ends = skel & (neighbours == 1) & ~body
    return prot, skel & prot, ends


def check_filopodial(s) -> None:
    """>= 3 protrusion end points in some frame, growing mean length, inscribed radius <= 2 voxels."""
    n_ends, mean_len, max_edt = [], [], 0.0
    for k in range(s.frames):
        prot, skel, ends = _protrusions(s, k)
        n_ends.append(int(ends.sum()))
        labels, n = ndimage.label(prot, structure=FULL)
        if n:
            lengths = ndimage.sum(skel, labels, index=np.arange(1, n + 1))
            mean_len.append(float(np.mean(lengths)))
            max_edt = max(max_edt, float(ndimage.distance_transform_edt(prot).max()))
        else:
            mean_len.append(0.0)
    assert max(n_ends) >= 3, (s.index, n_ends)
    # mean protrusion length grows over time (measured on the voxels and in the ground truth)
    half = s.frames // 2
    assert np.mean(mean_len[half:]) > np.mean(mean_len[:half]), (s.index, mean_len)
    gt = [f["mean_length_voxels"] for f in s.truth["frames_truth"]]
    assert np.polyfit(np.arange(s.frames), gt, 1)[0] > 0, (s.index, gt)
    # thin: maximum inscribed radius (EDT inside the protrusion voxels) <= 2 voxels at 64^3
    assert max_edt <= 2.0 * s.size / 64, (s.index, max_edt)
    assert all(n_components(m) == 1 for m in s.masks)


def check_deforming(s) -> None:
    """One component without holes in every frame; consecutive frames differ (Dice < 0.98 for half)."""
    m = s.masks.astype(bool)
    for k in range(s.frames):
        assert n_components(m[k]) == 1
        assert np.array_equal(ndimage.binary_fill_holes(m[k]), m[k])
    dice = [2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in zip(m[:-1], m[1:])]
    assert sum(d < 0.98 for d in dice) >= len(dice) / 2, (s.index, dice)


def check_inside_cube(s, min_extent: float) -> None:
    """Fills a good part of the cube and keeps off the border."""
    zyx = np.argwhere(s.masks.any(axis=0))
    margin = 3 * s.size / 64
    assert zyx.min() >= margin and zyx.max() <= s.size - 1 - margin
    extent = (zyx.max(axis=0) - zyx.min(axis=0) + 1) / s.size
    assert extent.max() > min_extent


# ---------------------------------------------------------------------------------------------------
# acceptance (default suite: a few sequences; slow: many sequences and another seed)


def test_dividing_components_and_volume_at_divisions():
    seen = [check_dividing(seq("dividing", i)) for i in range(8)]
    # the sample covers sequences with no, one and two divisions in the window
    assert set(seen) == {0, 1, 2}, seen
    assert sum(seen) >= 6


def test_dividing_volume_smooth_over_time():
    # growth is slow; no frame-to-frame jump larger than 8 % anywhere (furrow, pinch, separation)
    for i in range(4):
        s = seq("dividing", i, frames=20, size=48)
        v = s.masks.reshape(s.frames, -1).sum(axis=1).astype(float)
        assert np.max(np.abs(np.diff(v)) / v[:-1]) < 0.08, (i, v)


def test_filopodial_protrusions_count_growth_and_thickness():
    for i in range(4):
        check_filopodial(seq("filopodial", i))


def test_filopodial_radius_scales_with_size():
    s = seq("filopodial", 0)
    big = seq("filopodial", 0, frames=2, size=128)
    # the same physical protrusions: about 8 times the voxels at 128^3 (twice as many per axis)
    prot64 = _protrusions(s, s.frames - 1)[0].sum()
    body = ndimage.binary_dilation(big.mask(1.0, part="body"), iterations=4)
    prot128 = (big.masks[-1].astype(bool) & ~body).sum()
    assert 5.0 < prot128 / max(prot64, 1) < 11.0


def test_deforming_one_component_no_holes_and_changing():
    for i in range(4):
        s = seq("deforming", i)
        check_deforming(s)
        check_inside_cube(s, 0.4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["deforming", "dividing", "filopodial"])
def test_acceptance_many_sequences(kind):
    seen = []
    for i in range(24):
        s = simulate_sequence(kind, i, frames=10, size=64, seed=7)
        check_inside_cube(s, 0.4)
        if kind == "dividing":
            seen.append(check_dividing(s))
        elif kind == "filopodial":
            check_filopodial(s)
        else:
            check_deforming(s)
    if kind == "dividing":
        assert set(seen) == {0, 1, 2}, seen
    s = simulate_sequence(kind, 3, frames=30, size=96, seed=7)  # more frames, another size
    {"dividing": check_dividing, "filopodial": check_filopodial, "deforming": check_deforming}[kind](s)


# ---------------------------------------------------------------------------------------------------
# the continuous field


@pytest.mark.parametrize("kind", ["deforming", "dividing", "filopodial"])
def test_same_shape_at_any_resolution_and_clip_exact(kind):
    s = seq(kind, 1, frames=3, size=33)
    t = 0.5
    coarse = s.grid_sdf(t, 33) / 16.0  # voxels of the 33 grid -> normalised units
    fine = s.grid_sdf(t, 65) / 32.0
    # voxel i of 33 sits exactly on voxel 2 i of 65
    np.testing.assert_allclose(coarse, fine[::2, ::2, ::2], atol=1e-5)
    # clipped evaluation (far primitives skipped) equals the exact field clipped
    np.testing.assert_allclose(s.grid_sdf(t, 33, clip=2.0), np.minimum(s.grid_sdf(t, 33), 2.0), atol=1e-5)
    # point evaluation agrees with the grid (points are (x, y, z) columns)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 33, size=(200, 3))  # (z, y, x)
    pts = -1 + 2 * idx[:, ::-1] / 32.0
    np.testing.assert_allclose(s.sdf(t, pts) * 16.0, coarse[idx[:, 0], idx[:, 1], idx[:, 2]] * 16.0, atol=1e-4)
    # masks are the field's sign at the frame times
    np.testing.assert_array_equal(s.masks[1] > 0, s.grid_sdf(float(s.times[1]), 33) <= 0)


@pytest.mark.parametrize("kind", ["deforming", "dividing", "filopodial"])
def test_sdf_is_distance_like(kind):
    """Near the surface |field| is close to the true distance to its zero level set.

    Exact for balls and capsules; first-order for deformed bodies; below the distance (a bound)
    inside smooth-union fillets and for the ellipsoid bound.
    """
    from scipy.spatial import cKDTree
    from skimage.measure import marching_cubes

    s = seq(kind, 2, frames=2, size=32)
    f = s.grid_sdf(0.5, 129, clip=8.0)
    verts = marching_cubes(f, level=0.0)[0]  # (z, y, x) voxels of the 129 grid
    surf = -1 + 2 * verts[:, ::-1] / 128.0
    rng = np.random.default_rng(1)
    pts = surf[rng.integers(0, len(surf), 1500)] + rng.normal(scale=0.06, size=(1500, 3))
    d_true = cKDTree(surf).query(pts)[0]
    d = np.abs(s.sdf(0.5, pts))
    keep = d_true > 0.03  # the vertex cloud overestimates distances by ~h^2 / 2d: 3 % here
    lo, mid, hi = np.quantile(d[keep] / d_true[keep], [0.1, 0.5, 0.98])
    assert 0.75 < lo and 0.95 < mid < 1.05 and hi < 1.2, (lo, mid, hi)


def test_primitives_exact():
    from cellinr.data.simulation.primitives import (
        capsule,
        fibonacci_sphere,
        harmonic_sum,
        smin,
    )

    rng = np.random.default_rng(0)
    p = rng.uniform(-1, 1, size=(500, 3))
    a, b, r = np.array([-0.3, 0.1, 0.2]), np.array([0.4, -0.2, 0.0]), 0.1
    # brute force: distance to 2001 points on the segment
    seg = a + np.linspace(0, 1, 2001)[:, None] * (b - a)
    brute = np.min(np.linalg.norm(p[:, None, :] - seg[None], axis=2), axis=1) - r
    np.testing.assert_allclose(capsule(p[:, 0], p[:, 1], p[:, 2], a, b, r), brute, atol=5e-4)
    u, v = rng.normal(size=1000), rng.normal(size=1000)
    k = 0.5
    s = smin(u, v, k)
    far = np.abs(u - v) >= k
    np.testing.assert_array_equal(s[far], np.minimum(u, v)[far])
    assert np.all(s <= np.minimum(u, v)) and np.all(s >= np.minimum(u, v) - k / 4 - 1e-12)
    # harmonic basis functions have unit RMS on the sphere and are orthogonal
    n = fibonacci_sphere(20000)
    basis = np.stack([harmonic_sum(n[:, 0], n[:, 1], n[:, 2], np.eye(24)[i]) for i in range(24)])
    gram = basis @ basis.T / n.shape[0]
    np.testing.assert_allclose(gram, np.eye(24), atol=2e-3)


# ---------------------------------------------------------------------------------------------------
# files, determinism, errors


def test_files_and_determinism(tmp_path):
    a = simulate(tmp_path / "a", kind="filopodial", sequences=2, frames=3, size=24, seed=5)
    b = simulate(tmp_path / "b", kind="filopodial", sequences=3, frames=3, size=24, seed=5)
    c = simulate(tmp_path / "c", kind="filopodial", sequences=1, frames=3, size=24, seed=6)
    for name in ("filopodial_000", "filopodial_001"):
        for ext in (".tif", ".json", ".png"):
            assert (a / f"{name}{ext}").read_bytes() == (b / f"{name}{ext}").read_bytes(), name + ext
    assert (a / "filopodial_000.tif").read_bytes() != (c / "filopodial_000.tif").read_bytes()
    img = read_tiff(a / "filopodial_001.tif")
    assert img.axes == "TZYX" and img.data.shape == (3, 24, 24, 24) and img.data.dtype == np.uint8
    assert set(np.unique(img.data)) == {0, 1}
    np.testing.assert_allclose(img.spacing, (CUBE_UM["filopodial"] / 23,) * 3, rtol=1e-5)
    truth = json.loads((a / "filopodial_001.json").read_text())
    assert truth["seed"] == 5 and truth["index"] == 1 and len(truth["frames_truth"]) == 3
    assert "protrusions" in truth["frames_truth"][0] and "parameters" in truth
    summary = json.loads((a / "simulation.json").read_text())
    assert summary["names"] == ["filopodial_000", "filopodial_001"]
    # the API sequence equals the file, and sequence i does not depend on N
    np.testing.assert_array_equal(simulate_sequence("filopodial", 1, frames=3, size=24, seed=5).masks, img.data)


def test_same_continuous_motion_whatever_the_number_of_frames():
    s3 = seq("deforming", 0, frames=3, size=32)
    s5 = seq("deforming", 0, frames=5, size=32)
    np.testing.assert_array_equal(s3.masks, s5.masks[::2])


def test_single_frame_small_grid_and_ground_truth_fields():
    s = simulate_sequence("dividing", 4, frames=1, size=8)
    assert s.masks.shape == (1, 8, 8, 8) and s.masks.any()
    np.testing.assert_array_equal(s.times, [0.0])
    d = seq("dividing", 1).truth
    assert d["divisions"] and {"time", "frame", "mother", "daughters", "furrow_start"} <= set(d["divisions"][0])
    f = seq("filopodial", 1).truth["frames_truth"][-1]
    p = f["protrusions"][0]
    assert {"length_voxels", "tip_zyx", "base_zyx", "parent"} <= set(p) and len(p["tip_zyx"]) == 3
    # a protrusion tip lies on the protrusion's axis: inside the mask, next to its end
    z, y, x = np.round(p["tip_zyx"]).astype(int)
    assert seq("filopodial", 1).masks[-1][max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any()


def test_bad_inputs(tmp_path):
    with pytest.raises(ParameterError, match="kind"):
        simulate_sequence("round", 0, frames=2, size=16)
    for kwargs, name in [({"frames": 0, "size": 16}, "frames"), ({"frames": 2, "size": 0}, "size"),
                         ({"frames": 2, "size": -3}, "size"), ({"frames": 2.5, "size": 16}, "frames")]:
        with pytest.raises(ParameterError, match=name):
            simulate_sequence("dividing", 0, **kwargs)
    with pytest.raises(ParameterError, match="sequences"):
        simulate(tmp_path / "x", kind="dividing", sequences=0, frames=2, size=16)
    with pytest.raises(ParameterError, match="seed"):
        simulate(tmp_path / "x", kind="dividing", sequences=1, frames=2, size=16, seed=-1)
    assert not (tmp_path / "x").exists()
    out = simulate(tmp_path / "x", kind="dividing", sequences=1, frames=2, size=16)
    with pytest.raises(OutputExistsError):
        simulate(out, kind="dividing", sequences=1, frames=2, size=16)
    simulate(out, kind="deforming", sequences=1, frames=2, size=16, overwrite=True)
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tif") == ["deforming_000.tif"]


def test_cli(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--kind", "dividing", "--sequences", "2", "--frames", "2", "--size", "16",
                 "--seed", "3", "--out", str(out)]) == 0
    assert (out / "dividing_001.tif").exists() and (out / "dividing_001.png").exists()
    assert main(["simulate", "--kind", "dividing", "--sequences", "1", "--frames", "2", "--size", "16",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--kind", "spiky", "--out", str(tmp_path / "y")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["simulate", "--kind", "dividing", "--frames", "0", "--out", str(tmp_path / "y")])
    assert main(["simulate", "--kind", "dividing", "--size", "4", "--out", str(tmp_path / "y")]) == 2
    assert "size" in capsys.readouterr().err
