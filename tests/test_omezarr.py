"""OME-Zarr (NGFF): streaming writer, generate/benchmark outputs, reading through open_source."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

from cellinr.errors import DependencyError, InputError
from cellinr.io.omezarr import OmeZarrWriter, pyramid_shapes, write_ome_zarr
from cellinr.io.sources import open_source


def _ngff_read(path):
    """Image and label nodes of a store read by the independent reader (ome_zarr.reader)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    image = nodes[0]
    labels = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    return image, labels


def _scale(node, level=0):
    return next(t["scale"] for t in node.metadata["coordinateTransformations"][level] if t["type"] == "scale")


def test_generate_ome_zarr_round_trip_with_independent_reader(tmp_path):
    from cellinr.generation.frontends import generate
    from cellinr.io.tiff import read_tiff

    records = generate("deforming", tmp_path / "gen", n=2, size=24, frames=4, formats="tiff,ome-zarr",
                       device="cpu")
    for rec in records:
        tif = read_tiff(tmp_path / "gen" / rec["files"]["tiff"])
        store = tmp_path / "gen" / rec["files"]["ome-zarr"]
        image, labels = _ngff_read(store)
        assert len(labels) == 1 and labels[0].metadata["name"] == "cells"
        assert np.array_equal(np.asarray(labels[0].data[0]), tif.data)  # identical masks
        assert np.array_equal(np.asarray(image.data[0]), tif.data)
        axes = labels[0].metadata["axes"]
        assert [a["name"] for a in axes] == ["t", "z", "y", "x"]
        assert [a.get("unit") for a in axes[1:]] == ["micrometer"] * 3
        voxel = rec["options"]["voxel_size_um"]
        assert _scale(labels[0])[1:] == pytest.approx(voxel) and tif.spacing == pytest.approx(voxel)
        # and through cellinr's own reader, for prepare and measure
        with open_source(store) as src:
            assert src.spacing == pytest.approx(voxel) and src.dataset == "cells"
            assert np.array_equal(src.read_all_labels(), tif.data)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_writer_multiscale_units_and_time_step(tmp_path, version):
    rng = np.random.default_rng(0)
    labels = (rng.random((3, 20, 300, 260)) > 0.7).astype(np.uint16) * 7
    image = rng.integers(0, 4000, labels.shape, dtype=np.uint16)
    path = write_ome_zarr(tmp_path / "x.ome.zarr", image, labels={"cells": labels}, spacing=(2.0, 0.25, 0.25),
                          frame_interval=1.5, version=version)
    node, (label_node,) = _ngff_read(path)
    assert [d.shape for d in node.data] == [(3, 20, 300, 260), (3, 10, 150, 130), (3, 5, 75, 65)]
    assert _scale(node, 0) == pytest.approx([1.5, 2.0, 0.25, 0.25])
    assert _scale(node, 1) == pytest.approx([1.5, 4.0, 0.5, 0.5])
    assert node.metadata["axes"][0] == {"name": "t", "type": "time", "unit": "minute"}
    assert np.array_equal(np.asarray(node.data[0]), image)
    assert np.array_equal(np.asarray(label_node.data[0]), labels)
    assert np.array_equal(np.asarray(label_node.data[1]), labels[:, ::2, ::2, ::2])  # labels: nearest
    with open_source(path, dataset="image") as src:
        assert src.frame_interval == pytest.approx(1.5) and src.spacing == pytest.approx((2.0, 0.25, 0.25))
        assert np.array_equal(src.read_frame(2, (slice(3, 9), slice(None), slice(10, 20))), image[2, 3:9, :, 10:20])
    # compressed: a sparse label image takes far less than its raw size
    raw = labels.nbytes
    stored = sum(f.stat().st_size for f in (path / "labels" / "cells" / "0").rglob("*") if f.is_file())
    assert stored < raw / 3


def test_pyramid_levels():
    assert pyramid_shapes((256, 256, 256)) == [(256, 256, 256), (128, 128, 128)]
    assert pyramid_shapes((64, 64, 64)) == [(64, 64, 64)]
    assert pyramid_shapes((512, 600)) == [(512, 600), (256, 300), (128, 150), (64, 75)]


def test_interrupted_writer_leaves_nothing(tmp_path):
    path = tmp_path / "cell.ome.zarr"
    with pytest.raises(RuntimeError):
        with OmeZarrWriter(path, n_frames=3, frame_shape=(8, 8, 8), dtype=None, labels={"cells": "uint8"}) as w:
            w.write_mask(0, np.ones((8, 8, 8), bool))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_benchmark_ome_zarr(tmp_path):
    from cellinr.benchmarking import benchmark
    from cellinr.io.tiff import read_tiff, write_tiff

    masks = np.zeros((3, 12, 40, 40), np.uint8)
    masks[:, 3:9, 10:20, 12:22] = 1
    write_tiff(tmp_path / "src" / "a.tif", masks, axes="TZYX", spacing=(1.0, 0.5, 0.5), frame_interval=2.0)
    out = benchmark(tmp_path / "src", tmp_path / "bench", formats="tiff,ome-zarr", three_d=True)
    info = json.loads((out / "benchmark.json").read_text())
    assert info["formats"] == ["tiff", "ome-zarr"] and not (out / "ctc").exists()
    image2d = read_tiff(out / "sequences" / "a_image.tif").data
    mask2d = read_tiff(out / "sequences" / "a_mask.tif").data
    node, (label_node,) = _ngff_read(out / "sequences" / "a.ome.zarr")
    assert np.array_equal(np.asarray(node.data[0]), image2d)
    assert np.array_equal(np.asarray(label_node.data[0]), mask2d)
    assert _scale(node) == pytest.approx([2.0, 0.5, 0.5])
    with open_source(out / "sequences3d" / "a.ome.zarr") as src:
        assert src.frame_shape == (12, 40, 40) and src.frame_interval == pytest.approx(2.0)
        assert np.array_equal(src.read_all_labels() > 0, masks > 0)


def test_prepare_and_measure_read_ome_zarr(tmp_path):
    from cellinr.data.preparation import prepare
    from cellinr.measurement.tables import measure

    labels = np.zeros((2, 24, 40, 40), np.uint16)
    labels[:, 6:16, 5:15, 5:15] = 3
    labels[:, 6:14, 22:34, 20:30] = 9
    store = write_ome_zarr(tmp_path / "cells.ome.zarr", labels=({"cells": labels}), spacing=(2.0, 1.0, 1.0))
    data = prepare(store, tmp_path / "data", size=32, preview=False)
    manifest = json.loads((data / "manifest.json").read_text())
    assert [s["label"] for s in manifest["sequences"]] == [3, 9]
    assert manifest["sources"][0]["format"] == "ome-zarr" and manifest["sources"][0]["spacing_um"] == [2.0, 1.0, 1.0]
    rows = measure(tmp_path / "cells.ome.zarr")
    volumes = {(r["sequence"], r["frame"]): r["volume_um3"] for r in rows}
    assert volumes[("cells_label3", 0)] == pytest.approx(10 * 10 * 10 * 2.0, rel=0.05)
    assert volumes[("cells_label9", 1)] == pytest.approx(8 * 12 * 10 * 2.0, rel=0.05)


def test_not_ngff_and_missing_axes_are_one_line_errors(tmp_path):
    import zarr

    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    plain.create_array("data", shape=(4, 4), dtype="uint8")
    with pytest.raises(InputError, match=r"plain\.zarr: a Zarr store without OME-NGFF"):
        open_source(tmp_path / "plain.zarr")
    flat = write_ome_zarr(tmp_path / "flat.ome.zarr", labels={"cells": np.ones((2, 8, 8), np.uint8)})
    with pytest.raises(InputError, match=r"flat\.ome\.zarr.*lack z; cellinr needs z, y, x"):
        open_source(flat)  # 2D+t where 3D is needed
    with open_source(flat, ndim=None) as src:  # measure reads 2D too
        assert src.frame_shape == (8, 8)
    with pytest.raises(InputError, match="no label image 'nuclei'.*choose: image, cells"):
        open_source(flat, dataset="nuclei", ndim=None)


def test_missing_library_gives_install_hint(monkeypatch, tmp_path):
    from cellinr.generation.runner import parse_formats

    for name in ("zarr", "ome_zarr", "ome_zarr.writer", "ome_zarr.format"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(DependencyError, match=r'pip install "cellinr\[ome-zarr\]"'):
        parse_formats("tiff,ome-zarr")
    with pytest.raises(DependencyError, match=r'pip install "cellinr\[ome-zarr\]"'):
        OmeZarrWriter(tmp_path / "a.ome.zarr", n_frames=1, frame_shape=(4, 4, 4), labels={"c": "uint8"})


STREAM_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from cellinr.io.omezarr import sequence_writer

    n, frames = int(sys.argv[2]), int(sys.argv[3])
    r = n // 5
    zz, yy, xx = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
    ball = zz**2 + yy**2 + xx**2 <= r * r
    mask = np.zeros((n, n, n), bool)  # the caller's frame: allocated before the baseline
    def peak_mb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    # warm up (imports, zarr's thread pool) on a tiny store, so only the writing itself is measured
    with sequence_writer(sys.argv[1] + ".warm", n_frames=1, dims=(4, 4, 4)) as w:
        w.write_mask(0, np.ones((4, 4, 4), bool))
    base = peak_mb()
    with sequence_writer(sys.argv[1], n_frames=frames, dims=(n, n, n), spacing=(1, 1, 1), frame_interval=1) as w:
        for t in range(frames):
            mask[:] = False
            c = n // 4 + t * n // (2 * frames)
            mask[n // 2 - r:n // 2 + r + 1, c - r:c + r + 1, n // 2 - r:n // 2 + r + 1] = ball
            w.write_mask(t, mask)
    print(peak_mb() - base)
""")


def _stream_peak_mb(tmp_path, n, frames):
    out = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(tmp_path / f"s{frames}.ome.zarr"), str(n),
                          str(frames)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_streaming_writer_memory_does_not_grow_with_frames(tmp_path):
    """Peak RSS growth while writing 128^3 x 4 and 128^3 x 36 frames: the same within 24 MB (zarr's
    I/O threads settle their buffers within the first frames), while the 32 extra frames are 64 MB."""
    small, large = _stream_peak_mb(tmp_path, 128, 4), _stream_peak_mb(tmp_path, 128, 36)
    assert large < small + 24


@pytest.mark.slow
def test_streaming_writer_256_cubed_30_frames_memory(tmp_path):
    """Acceptance: a 256^3 x 30 sequence written with a peak RAM growth below 4 float32 frames (256 MB)."""
    peak = _stream_peak_mb(tmp_path, 256, 30)
    print(f"peak RSS growth writing 256^3 x 30: {peak:.1f} MB (limit {4 * 256**3 * 4 / 2**20:.0f} MB)")
    assert peak < 4 * 256**3 * 4 / 2**20


def test_napari_ome_zarr_reads_generated_and_benchmark_stores(tmp_path):
    """The napari-ome-zarr plugin (not in the dev extra: skipped without it) reads image, labels and scale."""
    reader_module = pytest.importorskip("napari_ome_zarr._reader")
    labels = np.zeros((2, 6, 8, 8), np.uint8)
    labels[:, 2:4, 2:6, 2:6] = 1
    store = write_ome_zarr(tmp_path / "c.ome.zarr", labels={"cells": labels}, spacing=(2.0, 0.5, 0.5), frame_interval=3)
    layers = reader_module.napari_get_reader(str(store))(str(store))
    kinds = {kind: (data, meta) for data, meta, kind in layers}
    assert set(kinds) == {"image", "labels"}
    data, meta = kinds["labels"]
    assert np.array_equal(np.asarray(data[0] if isinstance(data, list) else data), labels)
    assert list(meta["scale"]) == pytest.approx([3.0, 2.0, 0.5, 0.5])
