"""Readers: TIFF (ImageJ, OME, plain, memmap and page-wise), folders (CTC), NumPy, HDF5, sdf_vid."""

import numpy as np
import pytest

from cellinr.errors import InputError, ParameterError
from cellinr.io.sources import open_source
from cellinr.io.tiff import open_tiff, read_tiff, write_tiff
from cellinr.io.units import parse_spacing
from cellinr.summary import describe


def _labels(shape, seed=0, n=5):
    return np.random.default_rng(seed).integers(0, n, size=shape).astype(np.uint16)


@pytest.mark.parametrize("compression", ["zlib", None])
def test_imagej_tzyx_frames_and_rois(tmp_path, compression):
    data = _labels((3, 4, 6, 7))
    path = write_tiff(tmp_path / "a.tif", data, axes="TZYX", spacing=(2.0, 0.5, 0.25), compression=compression)
    with open_source(path) as src:
        assert (src.n_frames, src.frame_shape, src.axes, src.format) == (3, (4, 6, 7), "TZYX", "tiff")
        np.testing.assert_allclose(src.spacing, (2.0, 0.5, 0.25), rtol=1e-5)
        assert src.spacing_from == "metadata"
        for t in range(3):
            np.testing.assert_array_equal(src.read_frame(t), data[t])
        roi = (slice(1, 3), slice(2, 5), slice(0, 4))
        np.testing.assert_array_equal(src.read_frame(2, roi), data[2][roi])
    with open_tiff(path) as arr:  # the lazy array reads only what it is asked
        assert (arr._memmap is not None) == (compression is None)
        np.testing.assert_array_equal(arr[1, 2:4, :, 3], data[1, 2:4, :, 3])
        np.testing.assert_array_equal(arr[..., 1], data[..., 1])


def test_simulator_style_uint8_and_read_tiff_compat(tmp_path):
    data = (_labels((2, 5, 8, 8)) > 2).astype(np.uint8)
    path = write_tiff(tmp_path / "sim.tif", data, axes="TZYX", spacing=(1.0, 1.0, 1.0))
    img = read_tiff(path)
    assert img.axes == "TZYX"
    np.testing.assert_array_equal(img.data, data)
    with open_source(path) as src:
        np.testing.assert_array_equal(src.read_labels(1), data[1])


def test_ome_tiff_axes_and_physical_size(tmp_path):
    import tifffile

    data = _labels((2, 3, 5, 6))
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, data[:, :, None], metadata={
        "axes": "TZCYX", "PhysicalSizeZ": 1.5, "PhysicalSizeY": 0.3, "PhysicalSizeX": 0.2,
        "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "µm"})
    with open_source(path) as src:
        assert src.axes == "TZYX" and src.n_frames == 2
        np.testing.assert_allclose(src.spacing, (1.5, 0.3, 0.0002), rtol=1e-6)
        np.testing.assert_array_equal(src.read_frame(1), data[1])


def test_plain_multipage_is_zyx_and_axes_override(tmp_path):
    import tifffile

    data = _labels((6, 5, 7))
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data, metadata=None)
    with open_source(path) as src:
        assert src.axes == "ZYX" and src.n_frames == 1 and src.spacing is None
        np.testing.assert_array_equal(src.read_frame(0), data)
    # the same pages as 2 time points of 3 slices stored Z-major ("ZTYX" after reshaping) via .npy
    zt = _labels((3, 2, 5, 4))
    np.save(tmp_path / "zt.npy", zt)
    with open_source(tmp_path / "zt.npy", axes="ztyx", spacing=[2, 1, 1]) as src:
        assert src.n_frames == 2 and src.frame_shape == (3, 5, 4) and src.spacing_from == "argument"
        np.testing.assert_array_equal(src.read_frame(1), zt[:, 1])
    xyzt = np.ascontiguousarray(zt.transpose(3, 2, 0, 1))  # (X, Y, Z, T)
    np.save(tmp_path / "xyzt.npy", xyzt)
    with open_source(tmp_path / "xyzt.npy", axes="XYZT") as src:
        np.testing.assert_array_equal(src.read_frame(1), zt[:, 1])


def test_ctc_folder_orders_by_frame_number(tmp_path):
    frames = [_labels((3, 4, 5), seed=s) for s in range(3)]
    for number, frame in zip([0, 2, 10], frames):
        write_tiff(tmp_path / f"man_track{number:03d}.tif", frame, axes="ZYX", spacing=(2.0, 1.0, 1.0))
    write_tiff(tmp_path / "man_seg_000_001.tif", frames[0][0], axes="YX")  # CTC 2D slice annotation: ignored
    (tmp_path / "man_track.txt").write_text("1 0 2 0\n")
    # numbers with gaps are not read as consecutive frames
    with pytest.raises(InputError, match=r"gaps \(missing 001, 003"):
        open_source(tmp_path)
    # ... unless allowed: the real numbers are honoured, a missing frame is empty
    with open_source(tmp_path, allow_gaps=True) as src:
        assert src.format == "tiff-folder" and src.pattern == "man_track"
        assert src.n_frames == 11 and src.time_indices == list(range(11))
        assert src.frame_labels[10] == "man_track010.tif" and "missing" in src.frame_labels[1]
        np.testing.assert_allclose(src.spacing, (2.0, 1.0, 1.0), rtol=1e-5)
        for t, frame in zip([0, 2, 10], frames):
            np.testing.assert_array_equal(src.read_frame(t), frame)
        assert not src.read_frame(5).any() and src.read_frame(5).shape == frames[0].shape
        np.testing.assert_array_equal(src.read_frame(2, (slice(1, 2),) * 3), frames[1][1:2, 1:2, 1:2])


def test_folder_natural_order_and_shape_mismatch(tmp_path):
    for i in (1, 2, 10):
        write_tiff(tmp_path / f"frame_{i}.tif", np.full((2, 3, 3), i, np.uint8), axes="ZYX")
    with open_source(tmp_path) as src:
        assert [int(src.read_frame(t)[0, 0, 0]) for t in range(3)] == [1, 2, 10]
    write_tiff(tmp_path / "frame_11.tif", np.zeros((2, 3, 4), np.uint8), axes="ZYX")
    with pytest.raises(InputError, match="frames of different shapes: frame_11.tif"):
        open_source(tmp_path)


def test_npz_and_hdf5_datasets(tmp_path):
    import h5py

    data = _labels((2, 3, 4, 5))
    np.savez_compressed(tmp_path / "a.npz", images=data * 10, labels=data)
    with open_source(tmp_path / "a.npz") as src:  # "labels" preferred among several arrays
        assert src.dataset == "labels"
        np.testing.assert_array_equal(src.read_frame(1), data[1])
    with pytest.raises(InputError, match="no array 'nope'.*images, labels"):
        open_source(tmp_path / "a.npz", dataset="nope")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["group/masks"] = data
        f["group/masks"].attrs["element_size_um"] = [2.0, 0.5, 0.5]
        f["other"] = np.zeros(3)
    with open_source(tmp_path / "a.h5", dataset="group/masks") as src:
        np.testing.assert_array_equal(src.read_frame(0, (slice(0, 2), slice(1, 3), slice(None))), data[0, :2, 1:3])
        np.testing.assert_allclose(src.spacing, (2.0, 0.5, 0.5))
    with pytest.raises(InputError, match="pass --dataset NAME.*group/masks, other"):
        open_source(tmp_path / "a.h5")
    with pytest.raises(InputError, match=r"a.h5: no dataset 'labels' in the file \(datasets: group/masks, other\)"):
        open_source(tmp_path / "a.h5", dataset="labels")


def test_reference_sdf_vid_matlab_layout(tmp_path):
    import h5py

    t, z, y, x = np.meshgrid(np.arange(3), np.arange(10), np.arange(12), np.arange(14), indexing="ij")
    # a sphere whose centre moves along x with time; values like the reference (negative inside)
    sdf = (np.sqrt((z - 4.5) ** 2 + (y - 5.5) ** 2 + (x - 4.0 - 2 * t) ** 2) - 3.0) / 32.0
    sdf = sdf.astype(np.float32)
    matlab = np.ascontiguousarray(sdf.transpose(3, 2, 1, 0))  # what h5py sees in a MATLAB file
    with h5py.File(tmp_path / "ref.h5", "w") as f:
        f.create_dataset("sdf_vid", data=matlab, chunks=(14, 12, 10, 1), compression="gzip", compression_opts=9)
    with open_source(tmp_path / "ref.h5") as src:
        assert (src.format, src.kind, src.axes) == ("sdf_vid", "sdf", "XYZT")
        assert src.n_frames == 3 and src.frame_shape == (10, 12, 14)
        for k in range(3):
            np.testing.assert_array_equal(src.read_frame(k), sdf[k])
            np.testing.assert_array_equal(src.read_labels(k), (sdf[k] <= 0).astype(np.uint8))


def test_bad_inputs_raise_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        open_source(tmp_path / "missing.tif")
    # truncated TIFFs, compressed (page-wise) and uncompressed (memmap)
    for compression in ("zlib", None):
        path = write_tiff(tmp_path / f"t{compression}.tif", _labels((4, 8, 16, 16), n=200), axes="TZYX",
                          compression=compression)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) * 2 // 3])
        with pytest.raises(InputError, match=f"{path.name}.*(truncated|cannot read)") as err:
            with open_source(path) as src:
                for t in range(src.n_frames):
                    src.read_frame(t)
        assert "\n" not in str(err.value)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="junk.tif: cannot read TIFF"):
        open_source(tmp_path / "junk.tif")
    np.save(tmp_path / "two.npy", np.zeros((4, 5)))
    with pytest.raises(InputError, match="2 dimensions.*expected 3 .ZYX. or 4 .TZYX.; pass --axes"):
        open_source(tmp_path / "two.npy")
    np.save(tmp_path / "five.npy", np.zeros((2, 1, 3, 4, 5)))
    with pytest.raises(InputError, match="5 dimensions"):
        open_source(tmp_path / "five.npy")
    with open_source(tmp_path / "five.npy", axes="TCZYX") as src:
        assert src.frame_shape == (3, 4, 5)
    with pytest.raises(InputError, match="axis C has length 2"):
        open_source(tmp_path / "five.npy", axes="CTZYX")
    with pytest.raises(ParameterError, match="--axes 'TZYX' has 4 letters"):
        open_source(tmp_path / "five.npy", axes="TZYX")
    with pytest.raises(InputError, match="no Z axis"):
        open_source(tmp_path / "two.npy", axes="YX")
    for bad in ([1.0, 2.0], [1.0, -1.0, 1.0], [0, 1, 1]):
        with pytest.raises(ParameterError, match="spacing"):
            parse_spacing(bad)
    assert parse_spacing(0.5) == (0.5, 0.5, 0.5)
    np.save(tmp_path / "float.npy", np.full((2, 3, 3), 1.5))
    with open_source(tmp_path / "float.npy") as src, pytest.raises(InputError, match="integers, found 1.5"):
        src.read_labels(0)
    np.save(tmp_path / "neg.npy", np.full((2, 3, 3), -1, np.int16))
    with open_source(tmp_path / "neg.npy") as src, pytest.raises(InputError, match="non-negative, found -1"):
        src.read_labels(0)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported file type .txt"):
        open_source(tmp_path / "a.txt")


def test_describe_input(tmp_path):
    path = write_tiff(tmp_path / "a.tif", _labels((2, 3, 4, 5)), axes="TZYX", spacing=(2.0, 0.5, 0.5))
    text = describe(path, stats=True)
    assert "frames: 2" in text and "(3, 4, 5)" in text and "(2.0, 0.5, 0.5) um (metadata)" in text
    assert "distinct label ids over all frames: 4" in text


def test_describe_2d_images_and_sequence_folders(tmp_path):
    # 2D and 2D+t images (texture inputs) get a summary instead of prepare's "no Z axis" error
    path = write_tiff(tmp_path / "m.tif", _labels((6, 7), n=4), axes="YX", spacing=(1.0, 0.25, 0.5))
    text = describe(path)
    assert "2D image" in text and "shape (6, 7), axes YX" in text and "0.25 x 0.5 um" in text
    write_tiff(tmp_path / "ctc" / "man_seg000.tif", _labels((3, 6, 7)), axes="TYX")
    assert "stack of 3 2D images (TYX)" in describe(tmp_path / "ctc" / "man_seg000.tif")
    write_tiff(tmp_path / "ctc" / "man_seg001.tif", _labels((3, 6, 7)), axes="TYX")
    assert "folder of 2 TIFF files" in describe(tmp_path / "ctc")
    # a folder of whole 3D+t sequences (simulate / generate output) lists them
    for k in range(2):
        write_tiff(tmp_path / "sim" / f"s{k}.tif", _labels((2, 3, 4, 5)), axes="TZYX", spacing=(2.0, 0.5, 0.5))
    text = describe(tmp_path / "sim")
    assert "folder of 2 mask sequences" in text and "s1.tif: 2 frames of (3, 4, 5)" in text
    # damaged files still raise
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="junk.tif: cannot read TIFF"):
        describe(tmp_path / "junk.tif")
