"""``cellinr prepare``: analytic shapes, anisotropy, labels and tracking, file format, bad inputs, real data."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cellinr.cli import main
from cellinr.data.cubes import mask_to_sdf
from cellinr.data.preparation import prepare
from cellinr.errors import InputError, OutputExistsError, ParameterError
from cellinr.io.sdf_dataset import SDFDataset
from cellinr.io.tiff import write_tiff
from cellinr.summary import describe

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"


def _grid(shape, spacing):
    """Physical (z, y, x) coordinates in microns of the voxel centres of an array."""
    return np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")


def _cube_coords(ds, index, k):
    """Physical coordinates of the voxels of frame ``k`` of sequence ``index``."""
    entry = ds.manifest["sequences"][index]
    size, v = ds.manifest["size"], ds.voxel_size_um
    origin = entry["crop_origin_um"][k]
    return np.meshgrid(*[o + np.arange(size) * v for o in origin], indexing="ij")


def _ellipsoid_distance(p, axes):
    """Exact signed distance (microns) from points ``p`` (3, ...) to an axis-aligned ellipsoid.

    The nearest surface point is x_i = a_i^2 p_i / (a_i^2 + t) with sum (a_i p_i / (a_i^2 + t))^2 = 1;
    F(t) decreases on (-min a^2, inf), so bisection finds the root (valid near the surface).
    """
    a = np.asarray(axes, float).reshape(3, *([1] * (p.ndim - 1)))
    lo = np.full(p.shape[1:], -a.min() ** 2 + 1e-9)
    hi = np.full(p.shape[1:], 4 * a.max() ** 2 + 4 * (p**2).sum(0))
    for _ in range(80):
        t = (lo + hi) / 2
        f = ((a * p / (a**2 + t)) ** 2).sum(0) - 1
        lo, hi = np.where(f > 0, t, lo), np.where(f > 0, hi, t)
    x = a**2 * p / (a**2 + (lo + hi) / 2)
    inside = ((p / a) ** 2).sum(0) <= 1
    return np.where(inside, -1, 1) * np.sqrt(((p - x) ** 2).sum(0))


@pytest.mark.parametrize("shape", ["sphere", "ellipsoid"])
def test_analytic_shape_sdf_within_one_voxel(tmp_path, shape):
    spacing = (1.0, 1.0, 1.0)
    centre = np.array([20.3, 24.6, 22.2])
    semi = (9.0, 9.0, 9.0) if shape == "sphere" else (6.0, 9.0, 13.0)
    p = np.stack(_grid((42, 50, 46), spacing)) - centre.reshape(3, 1, 1, 1)
    mask = _ellipsoid_distance(p, semi) <= 0
    path = write_tiff(tmp_path / f"{shape}.tif", mask.astype(np.uint8), axes="ZYX", spacing=spacing)
    clamp = 8.0
    out = prepare(path, tmp_path / "ds", size=40, clamp=clamp)
    ds = SDFDataset(out)
    assert ds.names == [shape] and ds.voxel_size_um == pytest.approx(1.0)
    assert ds.manifest["scale_um_per_unit"] == pytest.approx(clamp * 1.0)
    sdf = ds.read_frame(0, 0) * clamp  # voxels
    q = np.stack(_cube_coords(ds, 0, 0)) - centre.reshape(3, 1, 1, 1)
    truth = _ellipsoid_distance(q, semi)  # voxel = 1 um
    assert np.all((sdf <= 0) == (truth <= 0)), "wrong sign somewhere"
    near = np.abs(truth) <= clamp - 1.5
    err = np.abs(sdf[near] - truth[near])
    assert err.max() <= 1.0, f"max |SDF - distance| near the surface = {err.max():.3f} voxels"
    assert np.all(np.abs(sdf) <= 1 * clamp) and np.all(sdf[truth > clamp + 1] == clamp)
    # the volume is the input voxel count exactly (grids coincide), and the cube centre is the centroid
    assert int((sdf <= 0).sum()) == int(mask.sum())


def test_resampled_sphere_sign_and_distance(tmp_path):
    # a finer output grid than the input (voxel 0.5 um from 1 um input): interpolated boundary
    centre = np.array([15.2, 16.7, 14.9])
    p = np.stack(_grid((32, 34, 30), (1, 1, 1))) - centre.reshape(3, 1, 1, 1)
    r = 8.0
    mask = np.sqrt((p**2).sum(0)) <= r
    path = write_tiff(tmp_path / "s.tif", mask.astype(np.uint8), axes="ZYX", spacing=(1, 1, 1))
    ds = SDFDataset(prepare(path, tmp_path / "ds", size=48, clamp=6, scale=2))
    assert ds.voxel_size_um == pytest.approx(0.5)
    sdf_um = ds.read_frame(0, 0) * ds.scale_um_per_unit
    q = np.stack(_cube_coords(ds, 0, 0)) - centre.reshape(3, 1, 1, 1)
    truth = np.sqrt((q**2).sum(0)) - r
    # the input mask knows the surface only to half an input voxel (0.5 um = 1 output voxel)
    assert np.all(((sdf_um <= 0) == (truth <= 0)) | (np.abs(truth) < 0.5))
    near = np.abs(truth) <= 2.0
    assert np.abs(sdf_um[near] - truth[near]).max() <= 1.0  # 2 output voxels = 1 input voxel
    assert (sdf_um <= 0).sum() * 0.125 == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)


def test_anisotropic_input_gives_isotropic_proportioned_shape(tmp_path):
    spacing = (2.0, 0.5, 0.5)  # coarse Z, as in confocal stacks
    semi = np.array([7.0, 5.0, 10.0])
    centre = np.array([15.0, 12.3, 16.1])
    p = np.stack(_grid((16, 50, 66), spacing)) - centre.reshape(3, 1, 1, 1)
    mask = ((p / semi.reshape(3, 1, 1, 1)) ** 2).sum(0) <= 1
    path = write_tiff(tmp_path / "e.tif", mask.astype(np.uint8), axes="ZYX", spacing=spacing)
    ds = SDFDataset(prepare(path, tmp_path / "ds", size=48, clamp=8, voxel_size=0.5))
    entry = ds.manifest["sequences"][0]
    assert ds.voxel_size_um == 0.5 and ds.manifest["sources"][0]["spacing_um"] == pytest.approx(list(spacing))
    inside = ds.read_frame(0, 0) <= 0
    v = 0.5
    extents = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != ax))).size * v for ax in range(3)]
    np.testing.assert_allclose(extents, 2 * semi, atol=spacing[0])  # Z known to one input slice
    assert extents[2] / extents[1] == pytest.approx(2.0, rel=0.05)
    analytic = 4 / 3 * np.pi * semi.prod()
    # 2 um slices of a 14 um object: the ends are known only to a slice (input slab volume is -2 %)
    assert inside.sum() * v**3 == pytest.approx(analytic, rel=0.06)
    assert inside.sum() * v**3 == pytest.approx(entry["input_volume_um3"][0], rel=0.04)
    # the cube is centred on the centroid (to half a voxel)
    q = np.stack(_cube_coords(ds, 0, 0))
    centroid = [float(c[inside].mean()) for c in q]
    np.testing.assert_allclose(centroid, centre, atol=0.3)


def _moving_cells(n_cells=4, n_frames=3, shape=(24, 40, 64)):
    """(T, Z, Y, X) labels: spheres of different radii drifting along X."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    data = np.zeros((n_frames, *shape), np.uint16)
    for t in range(n_frames):
        for i in range(n_cells):
            cx = 8 + 15 * i + t
            r = 4 + i * 0.7
            data[t][(z - 11.5) ** 2 + (y - 12 - 5 * i) ** 2 + (x - cx) ** 2 <= r * r] = i + 1
    return data


def test_label_volume_gives_one_sequence_per_cell(tmp_path):
    data = _moving_cells()
    path = write_tiff(tmp_path / "cells.tif", data, axes="TZYX", spacing=(1, 1, 1))
    out = prepare(path, tmp_path / "ds", size=24, clamp=4, center="sequence")
    ds = SDFDataset(out)
    assert ds.names == [f"cells_cell{i:03d}" for i in range(1, 5)]
    for i, seq in enumerate(ds.sequences):
        assert seq.frames == 3 and seq.shape == (24, 24, 24) and seq.extra["label"] == i + 1
        for t, frame in enumerate(ds.iter_frames(i)):
            assert int((frame <= 0).sum()) == int((data[t] == i + 1).sum())
    # centre=sequence keeps the drift inside the cube; centre=frame removes it
    xs = [np.flatnonzero((f <= 0).any(axis=(0, 1))).mean() for f in ds.iter_frames(0)]
    assert xs[2] - xs[0] == pytest.approx(2.0, abs=0.01)
    ds2 = SDFDataset(prepare(path, tmp_path / "ds2", size=24, clamp=4))  # the default: centre=frame
    xs = [np.flatnonzero((f <= 0).any(axis=(0, 1))).mean() for f in ds2.iter_frames(0)]
    assert max(xs) - min(xs) < 0.01
    # the motion is kept as the trajectory (centroid per frame, microns): 1 um per frame along X
    for manifest_seq in (ds.manifest["sequences"][0], ds2.manifest["sequences"][0]):
        path_x = np.array(manifest_seq["trajectory_um"])[:, 2]
        np.testing.assert_allclose(np.diff(path_x), [1.0, 1.0], atol=1e-6)
    # file format: chunked per frame, gzip, attributes; manifest; previews
    with h5py.File(out / "cells_cell002.h5") as f:
        d = f["sdf"]
        assert d.shape == (3, 24, 24, 24) and d.dtype == np.float32 and d.chunks == (1, 24, 24, 24)
        assert d.compression == "gzip"
        assert d.attrs["clamp"] == 4.0 and d.attrs["voxel_size_um"] == 1.0 and d.attrs["scale_um_per_unit"] == 4.0
        assert json.loads(d.attrs["source_frames"]) == [0, 1, 2]
    m = json.loads((out / "manifest.json").read_text())
    assert m["clamp"] == 4.0 and m["size"] == 24 and m["voxel_size_um"] == 1.0 and m["scale_um_per_unit"] == 4.0
    assert m["sources"][0]["path"].endswith("cells.tif") and m["sequences"][1]["crop_box_input_voxels"]
    import imageio.v3 as iio

    png = iio.imread(out / "cells_cell001.png")
    assert png.shape == (24 + 2 + 24, 3 * 24 + 2 * 2) and png.max() == 255


def test_overlap_tracking_min_voxels_and_gaps(tmp_path):
    data = _moving_cells()
    shuffled = data.copy()
    perms = [[1, 2, 3, 4], [3, 1, 4, 2], [2, 4, 1, 3]]  # ids change every frame
    for t, perm in enumerate(perms):
        for old, new in zip(range(1, 5), perm):
            shuffled[t][data[t] == old] = new + 10 * (t + 1)
    shuffled[0][0, 0, 0] = 50  # a one-voxel speck
    path = write_tiff(tmp_path / "shuffled.tif", shuffled, axes="TZYX")
    with pytest.raises(InputError, match="cell 11 is missing in frames 1-2 of 3 .* --allow-gaps"):
        prepare(path, tmp_path / "ds", size=24, clamp=4)
    assert not (tmp_path / "ds").exists()
    ds = SDFDataset(prepare(path, tmp_path / "ds", size=24, clamp=4, track="overlap", min_voxels=5))
    assert len(ds) == 4 and all(s.frames == 3 for s in ds.sequences)
    for i, seq in enumerate(ds.sequences):
        labels = seq.extra["labels"]
        assert labels == [perms[t][i] + 10 * (t + 1) for t in range(3)]
        assert seq.extra["input_voxels"] == [int((data[t] == i + 1).sum()) for t in range(3)]
    ds = SDFDataset(prepare(path, tmp_path / "ds", size=24, clamp=4, allow_gaps=True, overwrite=True))
    assert len(ds) == 13 and {s.frames for s in ds.sequences} == {1}  # id 50 kept (min_voxels=0)
    ds = SDFDataset(prepare(path, tmp_path / "ds", size=24, clamp=4, allow_gaps=True, min_voxels=5,
                            overwrite=True))
    assert len(ds) == 12 and ds.manifest["excluded"][0]["label"] == 50


def test_vanishing_cell_frames_named_and_allow_gaps(tmp_path):
    data = _moving_cells(n_cells=2, n_frames=5)
    data[1:3][data[1:3] == 2] = 0
    np.save(tmp_path / "gap.npy", data)
    with pytest.raises(InputError, match=r"gap.npy: cell 2 is missing in frames 1-2 of 5"):
        prepare(tmp_path / "gap.npy", tmp_path / "ds", size=24, clamp=4)
    ds = SDFDataset(prepare(tmp_path / "gap.npy", tmp_path / "ds", size=24, clamp=4, allow_gaps=True))
    assert [s.extra["source_frames"] for s in ds.sequences] == [[0, 1, 2, 3, 4], [0, 3, 4]]
    assert ds.manifest["sources"][0]["spacing_um"] is None  # unknown: 1 um assumed, recorded
    assert ds.manifest["sources"][0]["spacing_used_um"] == [1.0, 1.0, 1.0]


def test_keep_largest_and_binary_mask(tmp_path):
    p = np.stack(_grid((20, 30, 30), (1, 1, 1)))
    mask = (((p - np.array([10, 15, 12.0]).reshape(3, 1, 1, 1)) ** 2).sum(0) <= 25).astype(np.uint8) * 255
    mask[2:4, 2:4, 25:27] = 255  # a detached fragment
    np.save(tmp_path / "m.npy", mask)
    ds = SDFDataset(prepare(tmp_path / "m.npy", tmp_path / "a", size=40, clamp=4))
    assert ds.names == ["m"] and ds.sequences[0].extra["label"] == 255
    both = int((ds.read_frame(0, 0) <= 0).sum())
    assert both == int((mask > 0).sum())
    ds = SDFDataset(prepare(tmp_path / "m.npy", tmp_path / "b", size=40, clamp=4, keep_largest=True))
    assert int((ds.read_frame(0, 0) <= 0).sum()) == both - 8


def test_auto_voxel_size_and_fit_errors(tmp_path):
    data = _moving_cells(n_cells=1, n_frames=1)[0]
    path = write_tiff(tmp_path / "c.tif", data, axes="ZYX", spacing=(0.5, 0.5, 0.5))
    # radius 4 voxels = 2 um: at 0.5 um the cell needs (9 + 2*margin + slack) voxels; 16 is enough
    assert SDFDataset(prepare(path, tmp_path / "a", size=16)).voxel_size_um == 0.5
    big = np.zeros((40, 40, 40), np.uint8)
    big[5:35, 5:35, 5:35] = 1
    path = write_tiff(tmp_path / "big.tif", big, axes="ZYX", spacing=(0.5, 0.5, 0.5))
    with pytest.raises(ParameterError, match="big spans 15 um.*pass --voxel-size 1.6"):
        prepare(path, tmp_path / "b", size=16, voxel_size=0.5)
    ds = SDFDataset(prepare(path, tmp_path / "b", size=16))  # auto: coarsened until it fits
    inside = ds.read_frame(0, 0) <= 0
    assert ds.voxel_size_um == pytest.approx(7.5 / (7.5 - 3))  # half extent / usable half width
    assert not (inside[0].any() or inside[-1].any() or inside[:, :, 0].any() or inside[:, :, -1].any())
    assert inside.sum() * ds.voxel_size_um**3 == pytest.approx(15.0**3, rel=0.05)


def test_reference_sdf_vid_prepares(tmp_path):
    t, z, y, x = np.meshgrid(np.arange(2), np.arange(20), np.arange(22), np.arange(24), indexing="ij")
    sdf = ((np.sqrt((z - 9.5) ** 2 + (y - 10.5) ** 2 + (x - 8.0 - 3 * t) ** 2) - 5.0) / 32).astype(np.float32)
    with h5py.File(tmp_path / "seq_001.h5", "w") as f:
        f.create_dataset("sdf_vid", data=sdf.transpose(3, 2, 1, 0), chunks=(24, 22, 20, 1), compression="gzip")
    ds = SDFDataset(prepare(tmp_path / "seq_001.h5", tmp_path / "ds", size=24, clamp=8))
    assert ds.names == ["seq_001"] and ds.sequences[0].frames == 2
    for k in range(2):
        assert int((ds.read_frame(0, k) <= 0).sum()) == int((sdf[k] <= 0).sum())


def test_ctc_folder_prepares(tmp_path):
    data = _moving_cells(n_cells=2, n_frames=3)
    folder = tmp_path / "01_RES"
    folder.mkdir()
    for t in range(3):
        write_tiff(folder / f"mask{t:03d}.tif", data[t], axes="ZYX", spacing=(1, 1, 1))
    ds = SDFDataset(prepare(folder, tmp_path / "ds", size=24, clamp=4))
    assert ds.names == ["01_RES_cell001", "01_RES_cell002"]
    assert ds.sequences[0].extra["source_time_indices"] == [0, 1, 2]


def test_mask_to_sdf_matches_full_edt():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    mask = ndimage.binary_dilation(rng.random((30, 31, 32)) > 0.995, iterations=2)
    mask[:3] = mask[-3:] = False
    full = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
    np.testing.assert_allclose(mask_to_sdf(mask, 5.0), np.clip(full, -5, 5) / 5, atol=1e-6)


def _cli(capsys, *argv):
    rc = main(list(map(str, argv)))
    err = capsys.readouterr().err.strip()
    return rc, err


def test_bad_inputs_exit_2_with_one_line_and_no_output(tmp_path, capsys):
    import h5py

    good = write_tiff(tmp_path / "good.tif", _moving_cells(n_cells=1, n_frames=1)[0], axes="ZYX")
    cases = []
    cases.append(([tmp_path / "missing.tif"], [], "missing.tif: no such file or folder"))
    trunc = write_tiff(tmp_path / "trunc.tif", _moving_cells(n_frames=2), axes="TZYX")
    trunc.write_bytes(trunc.read_bytes()[:3000])
    cases.append(([trunc], [], "trunc.tif: "))
    np.save(tmp_path / "zero.npy", np.zeros((8, 8, 8), np.uint8))
    cases.append(([tmp_path / "zero.npy"], [], "zero.npy: all frames are empty"))
    np.save(tmp_path / "full.npy", np.ones((8, 8, 8), np.uint8))
    cases.append(([tmp_path / "full.npy"], [], "full.npy: t=0 is entirely foreground"))
    gap = _moving_cells(n_cells=1, n_frames=4)
    gap[2] = 0
    np.save(tmp_path / "gap.npy", gap)
    cases.append(([tmp_path / "gap.npy"], [], "gap.npy: the mask is missing in frames 2 of 4"))
    folder = tmp_path / "frames"
    folder.mkdir()
    write_tiff(folder / "t0.tif", np.ones((4, 5, 6), np.uint8), axes="ZYX")
    write_tiff(folder / "t1.tif", np.ones((4, 5, 7), np.uint8), axes="ZYX")
    cases.append(([folder], [], "frames of different shapes: t1.tif is (4, 5, 7)"))
    np.save(tmp_path / "float.npy", np.full((4, 4, 4), 0.5, np.float32))
    cases.append(([tmp_path / "float.npy"], [], "float.npy: t=0: labels must be integers, found 0.5"))
    np.save(tmp_path / "neg.npy", -np.ones((4, 4, 4), np.int32))
    cases.append(([tmp_path / "neg.npy"], [], "labels must be non-negative, found -1"))
    np.save(tmp_path / "flat.npy", np.zeros((10, 10), np.uint8))
    cases.append(([tmp_path / "flat.npy"], [], "flat.npy: data has 2 dimensions (10, 10); expected 3"))
    cases.append(([good], ["--spacing", "1", "2"], "spacing: expected 3 values"))
    cases.append(([good], ["--spacing", "1", "-2", "1"], "spacing: values must be positive"))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["labels"] = np.ones((2, 4, 4, 4), np.uint8)
    cases.append(([tmp_path / "a.h5"], ["--dataset", "masks"],
                  "a.h5: no dataset 'masks' in the file (datasets: labels)"))
    cases.append(([good], ["--size", "12"], "size: cube edge must be an integer >= 16"))
    for inputs, extra, message in cases:
        out = tmp_path / "out"
        rc, err = _cli(capsys, "prepare", *inputs, "--out", out, "--size", "24", *extra)
        assert rc == 2, message
        assert message in err, (message, err)
        assert err.count("\n") == 0 and err.startswith("cellinr prepare: error: "), err
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_prepare_overwrite_and_info(tmp_path, capsys):
    path = write_tiff(tmp_path / "cells.tif", _moving_cells(n_frames=2), axes="TZYX", spacing=(1, 1, 1))
    out = tmp_path / "ds"
    rc, _ = _cli(capsys, "prepare", path, "--out", out, "--size", "24", "--clamp", "4", "--no-preview")
    assert rc == 0 and len(SDFDataset(out)) == 4 and not list(out.glob("*.png"))
    rc, err = _cli(capsys, "prepare", path, "--out", out, "--size", "24")
    assert rc == 2 and "output exists; pass --overwrite" in err
    with pytest.raises(OutputExistsError):
        prepare(path, out, size=24)
    rc, _ = _cli(capsys, "prepare", path, "--out", out, "--size", "32", "--overwrite")
    assert rc == 0 and SDFDataset(out).manifest["size"] == 32
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sequences: 4" in text and "cube: 32^3" in text and "voxel size: 1 um" in text
    assert main(["info", str(path)]) == 0
    assert "frames: 2" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": {}, "training": {}}))
    assert main(["info", str(run_dir)]) == 0
    assert "config.json" in capsys.readouterr().out


def _real_volumes(tmp_path, name, spacing, size):
    import tifffile

    path = REAL / name
    if not path.exists():
        pytest.skip(f"real data not found: {path} (the shared data folder is absent)")
    labels = tifffile.imread(path)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    out = prepare(path, tmp_path / "ds", size=size, clamp=8, spacing=spacing, preview=False)
    ds = SDFDataset(out)
    assert len(ds) == len(ids), "every nucleus becomes a sequence"
    v3 = ds.voxel_size_um**3
    errors = []
    for i, seq in enumerate(ds.sequences):
        expected = counts[ids == seq.extra["label"]][0] * np.prod(spacing)
        errors.append(abs((ds.read_frame(i, 0) <= 0).sum() * v3 / expected - 1))
    return ds, np.array(errors)


def test_real_platynereis_nuclei_volumes(tmp_path):
    # voxel size of this rescaled stack is not published: 1 x 1 x 1 (pixel units), documented in SOURCES.md
    ds, errors = _real_volumes(tmp_path, "platynereis_nuclei_labels.tif", (1.0, 1.0, 1.0), 64)
    assert len(ds) == 36
    assert errors.max() < 0.05, errors.max()


def test_real_cells3d_nuclei_volumes(tmp_path):
    # all 20 nuclei, including those cut by the stack's faces (closed by the zero padding)
    ds, errors = _real_volumes(tmp_path, "cells3d_nuclei_labels.tif", (0.29, 0.26, 0.26), 80)
    assert len(ds) == 20 and ds.voxel_size_um == pytest.approx(0.26)
    assert errors.max() < 0.05, errors.max()


def test_info_run_folder(tmp_path, capsys):
    import torch

    from cellinr.model import run as run_module
    from cellinr.model.config import preset
    from cellinr.nn.decoder import AutoDecoder

    config = preset("tiny")
    decoder = AutoDecoder.from_config(config.model)
    codes = torch.zeros(2, config.model.latent_dim)
    manifest = {"format": "cellinr-sdf-dataset", "size": 32, "clamp": 4.0, "voxel_size_um": 0.5,
                "scale_um_per_unit": 2.0, "sequences": []}
    run_module.write_run_files(tmp_path / "run", config=config, decoder=decoder, latents=codes,
                               rotations=torch.eye(3).expand(2, 3, 3), names=["a", "b"], frames=[3, 2],
                               manifest=manifest)
    assert main(["info", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    assert "run folder" in text and "training sequences: 2, frames 2-3" in text and "cube 32^3" in text


def test_prepared_sequence_file_can_be_prepared_again(tmp_path):
    data = _moving_cells(n_cells=1, n_frames=2)
    path = write_tiff(tmp_path / "c.tif", data, axes="TZYX", spacing=(0.5, 0.5, 0.5))
    first = SDFDataset(prepare(path, tmp_path / "a", size=24, clamp=4))
    again = SDFDataset(prepare(first.file(0), tmp_path / "b", size=32, clamp=6))  # kind "sdf", spacing from attrs
    assert again.voxel_size_um == 0.5 and again.manifest["sources"][0]["kind"] == "sdf"
    for t in range(2):
        assert (again.read_frame(0, t) <= 0).sum() == (first.read_frame(0, t) <= 0).sum() == (data[t] > 0).sum()


def test_folder_of_whole_sequences_is_expanded(tmp_path):
    folder = tmp_path / "sim"
    folder.mkdir()
    data = (_moving_cells(n_cells=1, n_frames=2) > 0).astype(np.uint8)
    for k in range(2):  # the simulator's layout: one (T, Z, Y, X) uint8 ImageJ TIFF per sequence
        write_tiff(folder / f"deforming_{k:03d}.tif", data, axes="TZYX", spacing=(1, 1, 1))
    ds = SDFDataset(prepare(folder, tmp_path / "ds", size=24, clamp=4))
    assert ds.names == ["deforming_000", "deforming_001"] and all(s.frames == 2 for s in ds.sequences)


def test_folder_of_single_frame_sequences_and_mips(tmp_path):
    """Whole-sequence folders are recognised by their marker, not only by T > 1; MIPs in them are skipped."""
    data = (_moving_cells(n_cells=1, n_frames=1) > 0).astype(np.uint8)
    sim = tmp_path / "sim"
    for k in range(3):  # `cellinr simulate --frames 1`: three one-frame sequences, not one three-frame cell
        write_tiff(sim / f"deforming_{k:03d}.tif", data, axes="TZYX", spacing=(1, 1, 1))
        (sim / f"deforming_{k:03d}.json").write_text("{}")
    ds = SDFDataset(prepare(sim, tmp_path / "ds", size=24, clamp=4))
    assert ds.names == ["deforming_000", "deforming_001", "deforming_002"]
    assert all(s.frames == 1 for s in ds.sequences)
    assert "folder of 3 mask sequences" in describe(sim)
    # `cellinr generate` output: masks and their (T, Y, X) maximum projections side by side
    gen = tmp_path / "gen"
    two = np.concatenate([data, data])
    write_tiff(gen / "g_000.tif", two, axes="TZYX", spacing=(1, 1, 1))
    write_tiff(gen / "g_000_mip.tif", two.max(axis=1), axes="TYX")
    ds = SDFDataset(prepare(gen, tmp_path / "ds2", size=24, clamp=4))
    assert ds.names == ["g_000"] and ds.sequences[0].frames == 2
    # a plain folder of per-frame 3D TIFFs is still one sequence over time
    frames = tmp_path / "frames"
    for t in range(2):
        write_tiff(frames / f"f{t}.tif", data[0], axes="ZYX", spacing=(1, 1, 1))
    ds = SDFDataset(prepare(frames, tmp_path / "ds3", size=24, clamp=4))
    assert len(ds) == 1 and ds.sequences[0].frames == 2


def test_bad_input_error_comes_without_spacing_warning(tmp_path, caplog):
    np.save(tmp_path / "zero.npy", np.zeros((8, 8, 8), np.uint8))  # no voxel size either
    with caplog.at_level("WARNING"), pytest.raises(InputError, match="all frames are empty"):
        prepare(tmp_path / "zero.npy", tmp_path / "out", size=16)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert not (tmp_path / "out").exists()


def test_small_cells_are_warned_with_numbers(tmp_path, caplog):
    # a nucleus of radius 3 um travelling 33 um: per-sequence centring must fit the path into the cube
    shape = (16, 16, 64)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    data = np.stack([((z - 7.5) ** 2 + (y - 7.5) ** 2 + (x - 10 - 3 * t) ** 2 <= 9).astype(np.uint8) for t in range(12)])
    path = write_tiff(tmp_path / "mover.tif", data, axes="TZYX", spacing=(1, 1, 1))
    with caplog.at_level("WARNING", logger="cellinr.data.preparation"):
        prepare(path, tmp_path / "seq", size=24, clamp=4, center="sequence", preview=False)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "fewer than 10 voxels across" in text and "--center frame" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cellinr.data.preparation"):
        ds = SDFDataset(prepare(path, tmp_path / "frame", size=24, clamp=4, preview=False))
    assert "voxels across" not in " ".join(r.getMessage() for r in caplog.records)
    assert ds.voxel_size_um == 1.0  # the cell, not its path, sets the voxel size
    assert np.ptp(np.array(ds.manifest["sequences"][0]["trajectory_um"])[:, 2]) == pytest.approx(33.0)


# -- Cell Tracking Challenge tracking ground truth: lineages --------------------------------------------
def _ctc_dataset(root):
    """A CTC data set: sequence 01 with a cell dividing at frame 3 (tracks 1 -> 2, 3) and a lone cell 4;
    sequence 02 with one cell. Returns the written labels of 01, (T, Z, Y, X)."""
    from cellinr.io.ctc import Track as CTCTrack
    from cellinr.io.ctc import track_masks, write_ctc_sequence

    T, S = 6, 40
    zz, yy, xx = np.mgrid[:S, :S, :S]
    masks = np.zeros((T, S, S, S), np.uint8)
    for t in range(T):
        if t < 3:
            masks[t] = (zz - 20) ** 2 + (yy - 14) ** 2 + (xx - 20) ** 2 <= (6 + t) ** 2
        else:
            d = 2 + t
            for sign in (-1, 1):
                masks[t] |= (zz - 20) ** 2 + (yy - 14) ** 2 + (xx - 20 - sign * d) ** 2 <= 4**2
        masks[t] |= ((zz - 20) ** 2 + (yy - 33) ** 2 + (xx - 20) ** 2 <= 4**2).astype(np.uint8)
    labels, tracks = track_masks(masks)
    # track_masks numbers by first appearance: mother and lone cell in frame 0, then the daughters
    assert sorted((t.begin, t.end, t.parent) for t in tracks) == [(0, 2, 0), (0, 5, 0), (3, 5, 1), (3, 5, 1)]
    write_ctc_sequence(root, 1, masks.astype(np.uint16) * 100, labels, tracks, spacing=(1, 1, 1))
    single = np.zeros((4, 24, 24, 24), np.uint16)
    single[:, 8:16, 8:16, 8:16] = 1
    write_ctc_sequence(root, 2, single, single, [CTCTrack(1, 0, 3, 0)], spacing=(1, 1, 1))
    return labels, tracks


def test_ctc_root_gives_one_sequence_per_lineage(tmp_path):
    root = tmp_path / "Fluo-N3DH-XX"
    labels, tracks = _ctc_dataset(root)
    mother = next(t.label for t in tracks if t.end == 2)
    lone = next(t.label for t in tracks if t.end == 5 and t.parent == 0)
    daughters = sorted(t.label for t in tracks if t.parent)
    ds = SDFDataset(prepare(root, tmp_path / "ds", size=32, clamp=4, voxel_size=1.0))
    assert ds.names == [f"Fluo-N3DH-XX_01_lineage{mother:03d}", f"Fluo-N3DH-XX_01_lineage{lone:03d}",
                        "Fluo-N3DH-XX_02_lineage001"]
    seq = ds.sequences[0]
    assert seq.frames == 6  # mother (frames 0-2) and daughters (3-5): one time-evolving shape
    assert seq.extra["tracks"] == [mother, *daughters]
    assert seq.extra["labels"] == [[mother]] * 3 + [daughters] * 3
    # each frame holds the union of the lineage's cells: same voxel count as the input (grids coincide)
    for t in range(6):
        union = np.isin(labels[t], [mother, *daughters])
        assert seq.extra["input_voxels"][t] == int(union.sum())
        assert int((ds.read_frame(0, t) <= 0).sum()) == int(union.sum())
    # two components after the division, one before
    from scipy import ndimage

    assert ndimage.label(ds.read_frame(0, 1) <= 0)[1] == 1 and ndimage.label(ds.read_frame(0, 4) <= 0)[1] == 2
    assert ds.sequences[2].frames == 4


def test_ctc_divisions_track_and_division_modes(tmp_path):
    root = tmp_path / "ctc"
    _, tracks = _ctc_dataset(root)
    per_track = SDFDataset(prepare(root / "01_GT" / "TRA", tmp_path / "tracks", size=32, clamp=4,
                                   voxel_size=1.0, divisions="track"))
    assert [s.frames for s in per_track.sequences] == [3, 6, 3, 3]  # daughters start at frame 3: no gap error
    assert per_track.names[0] == "ctc_01_track001"
    division = SDFDataset(prepare(root / "01_GT", tmp_path / "division", size=32, clamp=4, voxel_size=1.0,
                                  divisions="division"))
    assert [s.frames for s in division.sequences] == [6, 6]  # the division, and the lone cell
    assert main(["prepare", str(root / "02_GT"), "--out", str(tmp_path / "cli"), "--size", "32", "--clamp", "4",
                 "--divisions", "track"]) == 0


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:1] + ["2 0 1 0"] + lines[2:], "label 2 is in frame 2 (man_track002.tif), outside its track's frames 0-1"),
    (lambda lines: lines[:1] + lines[2:], "label 2 in frame 0 (man_track000.tif) is not in man_track.txt"),
    (lambda lines: lines + ["9 0 1 0"], "label 9 (frames 0-1) is missing in frame 0 (man_track000.tif)"),
    (lambda lines: lines[:3] + ["4 3 5 7"], "label 4 has parent 7, which is not a track"),
])
def test_ctc_man_track_that_disagrees_with_masks_is_one_line(tmp_path, capsys, edit, message):
    root = tmp_path / "ctc"
    _ctc_dataset(root)
    path = root / "01_GT" / "TRA" / "man_track.txt"
    lines = path.read_text().splitlines()
    assert lines[1].startswith("2 0 ")  # the lone cell, frames 0-5
    path.write_text("\n".join(edit(lines)) + "\n")
    rc = main(["prepare", str(root / "01_GT" / "TRA"), "--out", str(tmp_path / "ds"), "--size", "32", "--clamp", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert message in err and "man_track.txt" in err
    assert not (tmp_path / "ds").exists()
