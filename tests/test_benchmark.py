import json
from pathlib import Path

import numpy as np
import pytest

from cellinr.benchmarking import benchmark
from cellinr.cli import main
from cellinr.errors import InputError, OutputExistsError, ParameterError, RunError
from cellinr.io.ctc import check_ctc_sequence, read_ctc_sequence
from cellinr.io.tiff import read_tiff, write_tiff

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"


def dividing_sequence(T=6, S=24, split=3):
    """A sphere that becomes two spheres moving apart along X: (T, Z, Y, X) uint8."""
    zz, yy, xx = np.mgrid[:S, :S, :S]
    c = S // 2
    masks = np.zeros((T, S, S, S), np.uint8)
    for t in range(T):
        if t < split:
            masks[t] = (zz - c) ** 2 + (yy - c) ** 2 + (xx - c) ** 2 <= 6**2
        else:
            d = 3 + t
            masks[t] = ((zz - c) ** 2 + (yy - c) ** 2 + (xx - c + d) ** 2 <= 4**2) | (
                (zz - c) ** 2 + (yy - c) ** 2 + (xx - c - d) ** 2 <= 4**2)
    return masks


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "generated"
    masks = dividing_sequence()
    write_tiff(src / "cell_000.tif", masks, axes="TZYX", spacing=(1.0, 0.5, 0.5))
    write_tiff(src / "cell_001.tif", masks[:, :, ::-1].copy(), axes="TZYX", spacing=(1.0, 0.5, 0.5))
    write_tiff(src / "mips" / "cell_000_mip.tif", masks.max(axis=1), axes="TYX")  # skipped: 2D+t
    return src


def test_benchmark_layout_tracks_and_determinism(source, tmp_path):
    out = benchmark(source, tmp_path / "bench", three_d=True, seed=3)
    info = json.loads((out / "benchmark.json").read_text())
    assert [s["name"] for s in info["sequences"]] == ["cell_000", "cell_001"]
    assert [s["ctc"] for s in info["sequences"]] == ["01", "02"]
    for s in info["sequences"]:
        assert s["tracks_2d"] == [[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 5, 1]]
        assert s["tracks_3d"] == [[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 5, 1]]
        assert s["divisions_2d"] == s["divisions_3d"] == 1  # one mother, two daughters
    image = read_tiff(out / "sequences" / "cell_000_image.tif")
    mask = read_tiff(out / "sequences" / "cell_000_mask.tif")
    assert image.axes == "TYX" and image.data.shape == (6, 24, 24) and image.data.dtype == np.uint16
    # the projections keep the source's pixel size (Y, X), in both layouts
    assert image.spacing[1:] == mask.spacing[1:] == pytest.approx((0.5, 0.5), rel=1e-4)
    seg = read_tiff(out / "ctc" / "01_GT" / "SEG" / "man_seg000.tif")
    assert seg.spacing[1:] == pytest.approx((0.5, 0.5), rel=1e-4)
    np.testing.assert_array_equal(mask.data > 0, dividing_sequence().max(axis=1) > 0)
    assert image.data[mask.data > 0].mean() > image.data[mask.data == 0].mean() + 100
    for root, ndim in (("ctc", 3), ("ctc3d", 4)):
        for k in (1, 2):
            seq = read_ctc_sequence(out / root, k)
            assert seq.images.ndim == ndim and len(seq.images) == 6
            assert check_ctc_sequence(seq) == []
            tracks = [(t.label, t.begin, t.end, t.parent) for t in seq.tracks]
            assert tracks == [(1, 0, 2, 0), (2, 3, 5, 1), (3, 3, 5, 1)]
    seq2d = read_ctc_sequence(out / "ctc", 1)
    np.testing.assert_array_equal(seq2d.images, image.data)
    np.testing.assert_array_equal(seq2d.seg, mask.data)
    assert read_tiff(out / "ctc3d" / "01" / "t000.tif").spacing == pytest.approx((1.0, 0.5, 0.5), rel=1e-4)
    # the same seed gives identical files; another seed other textures
    again = benchmark(source, tmp_path / "bench2", three_d=True, seed=3)
    for rel in ("sequences/cell_001_image.tif", "ctc3d/02/t005.tif"):
        np.testing.assert_array_equal(read_tiff(out / rel).data, read_tiff(again / rel).data)
    other = benchmark(source, tmp_path / "bench3", seed=4)
    assert not np.array_equal(read_tiff(other / "sequences/cell_000_image.tif").data, image.data)
    assert not (other / "ctc3d").exists()
    with pytest.raises(OutputExistsError):
        benchmark(source, out)
    # a benchmark inside its source is refused (an output never lies inside an input), and nothing is left
    with pytest.raises(ParameterError, match="lies inside the input"):
        benchmark(source, source / "bench", three_d=True, seed=3)
    assert not (source / "bench").exists()
    from cellinr.summary import describe

    text = describe(out)
    assert "benchmark folder" in text and "sequences: 2" in text and "2D divisions: 2" in text


def test_benchmark_cli_with_model_and_bad_inputs(source, tmp_path, capsys):
    assert main(["benchmark", str(source / "cell_000.tif"), "--out", str(tmp_path / "b"),
                 "--texture", "dsb2018", "--device", "cpu"]) == 0  # the bundled texture model ships with the package
    data = read_tiff(tmp_path / "b" / "sequences" / "cell_000_image.tif").data
    assert data.shape == (6, 24, 24) and data.dtype == np.uint16
    not_model = tmp_path / "not_a_model"
    not_model.mkdir()
    with pytest.raises(RunError, match="not a texture model"):
        benchmark(source, tmp_path / "b2", texture=not_model)
    assert main(["benchmark", str(source), "--out", str(tmp_path / "b3"), "--texture", str(not_model)]) == 2
    assert "not a texture model" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no mask files"):
        benchmark(empty, tmp_path / "b4")
    mips = dividing_sequence().max(axis=1)
    write_tiff(empty / "mip.tif", mips, axes="TYX")
    with pytest.raises(InputError, match="no 3D or 3D\\+t mask TIFFs"):
        benchmark(empty, tmp_path / "b5", three_d=True)
    # without 3D masks, 2D+t masks (MIPs) are used as they are
    flat = benchmark(empty, tmp_path / "b5")
    np.testing.assert_array_equal(read_tiff(flat / "sequences" / "mip_mask.tif").data > 0, mips > 0)
    assert json.loads((flat / "benchmark.json").read_text())["sequences"][0]["tracks_2d"][1] == [2, 3, 5, 1]
    write_tiff(empty / "mip.tif", np.zeros((3, 8, 8), np.uint8), axes="TYX")
    with pytest.raises(InputError, match="all frames are empty"):
        benchmark(empty, tmp_path / "b7")
    write_tiff(tmp_path / "float.tif", np.full((2, 4, 8, 8), 0.5, np.float32), axes="TZYX")
    with pytest.raises(InputError, match="labels must be integers"):
        benchmark(tmp_path / "float.tif", tmp_path / "b6")
    assert not (tmp_path / "b6").exists()


@pytest.mark.skipif(not (REAL / "dsb2018_nuclei_img.tif").exists(), reason=f"real data not found in {REAL}")
def test_benchmark_like_real_pair(source, tmp_path):
    out = benchmark(source, tmp_path / "b", like=(REAL / "dsb2018_nuclei_img.tif", REAL / "dsb2018_nuclei_labels.tif"))
    params = json.loads((out / "benchmark.json").read_text())["render_params"]
    assert 10 < params["background"] < 40 and params["foreground"] > 20  # DSB: 8-bit range, dark background
    image = read_tiff(out / "sequences" / "cell_000_image.tif").data
    assert image.max() < 1000


def test_benchmark_of_simulated_division_matches_ground_truth(tmp_path):
    """`cellinr simulate --kind dividing` -> benchmark --3d: the CTC 3D tracks divide when the simulator says."""
    from cellinr.data.simulation.phantoms import simulate

    sim = simulate(tmp_path / "sim", kind="dividing", sequences=3, frames=8, size=32, seed=1)
    out = benchmark(sim, tmp_path / "bench", three_d=True)
    info = json.loads((out / "benchmark.json").read_text())
    checked = 0
    for k, entry in enumerate(info["sequences"], start=1):
        truth = json.loads((sim / f"{entry['name']}.json").read_text())
        frames = sorted(d["frame"] for d in truth["divisions"] if d["frame"] is not None)
        for root in ("ctc", "ctc3d"):
            assert check_ctc_sequence(read_ctc_sequence(out / root, k)) == []
        tracks = read_ctc_sequence(out / "ctc3d", k).tracks
        starts = sorted({t.begin for t in tracks if t.parent})
        assert entry["divisions_3d"] == len(frames)
        # the simulator counts 26-connected components, the CTC export 6-connected: at most a frame apart
        assert len(starts) == len(frames) and all(abs(a - b) <= 1 for a, b in zip(starts, frames)), (starts, frames)
        checked += len(frames)
    assert checked >= 1


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_sharded_benchmark_equals_one_process(source, tmp_path, capsys):
    """Three shards (one finishing last assembles the output) give the bytes of one process; bad shards refused."""
    write_tiff(source / "cell_002.tif", dividing_sequence()[:, ::-1].copy(), axes="TZYX", spacing=(1.0, 0.5, 0.5))
    whole = benchmark(source, tmp_path / "one", three_d=True, seed=5)
    for k in (2, 0):
        benchmark(source, tmp_path / "three", three_d=True, seed=5, shard=f"{k}/3")
        assert not (tmp_path / "three").exists()  # not complete yet
    with pytest.raises(OutputExistsError, match="other options"):
        benchmark(source, tmp_path / "three", three_d=True, seed=6, shard="1/3")
    assert main(["benchmark", str(source), "--out", str(tmp_path / "three"), "--3d", "--seed", "5",
                 "--shard", "1/3"]) == 0
    assert _tree(whole) == _tree(tmp_path / "three")
    assert not any(p.name.startswith(".three") for p in tmp_path.iterdir())  # the part folders are gone
    assert main(["benchmark", str(source), "--out", str(tmp_path / "x"), "--shard", "3/3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shard 3/3" in err[0]
