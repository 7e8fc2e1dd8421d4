"""Time has a unit: frame intervals from metadata through prepare, training and generation, and compare's check."""

import numpy as np
import pytest
import tifffile

from cellinr.cli import main
from cellinr.data.preparation import prepare
from cellinr.errors import InputError
from cellinr.io.sources import open_source
from cellinr.io.tiff import read_tiff, write_tiff
from cellinr.measurement.comparison import compare
from cellinr.measurement.tables import describe_sequence


def _ball_sequence(frames=3, size=24, r0=5.0):
    z, y, x = np.ogrid[:size, :size, :size]
    c = (size - 1) / 2
    return np.stack([((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= (r0 + t) ** 2) for t in range(frames)]).astype(np.uint8)


def test_frame_interval_from_imagej_and_ome_metadata(tmp_path):
    masks = _ball_sequence()
    write_tiff(tmp_path / "ij.tif", masks, axes="TZYX", spacing=(1.0, 0.5, 0.5), frame_interval=2.5)
    assert read_tiff(tmp_path / "ij.tif").frame_interval == pytest.approx(2.5)
    tifffile.imwrite(tmp_path / "a.ome.tif", masks, ome=True,
                     metadata={"axes": "TZYX", "TimeIncrement": 90, "TimeIncrementUnit": "s"})
    with open_source(tmp_path / "a.ome.tif") as src:
        assert src.frame_interval == pytest.approx(1.5)
    with open_source(tmp_path / "a.ome.tif", frame_interval=4) as src:  # the argument wins
        assert src.frame_interval == 4.0
    with pytest.raises(Exception, match="frame-interval"):
        open_source(tmp_path / "a.ome.tif", frame_interval=-1)


def test_interval_reaches_the_manifest_and_growth_per_minute(tmp_path):
    masks = _ball_sequence()
    write_tiff(tmp_path / "cell.tif", masks, axes="TZYX", spacing=(1.0, 1.0, 1.0), frame_interval=3.0)
    ds = prepare(tmp_path / "cell.tif", tmp_path / "ds", size=32, clamp=4, preview=False, progress=False)
    import json

    assert json.loads((ds / "manifest.json").read_text())["frame_interval_min"] == 3.0
    rows = describe_sequence(masks, (1.0, 1.0, 1.0), frame_interval=3.0)
    assert rows[0]["growth_rate_um3_per_min"] == pytest.approx(rows[0]["growth_rate_um3_per_frame"] / 3.0)
    assert [r["time_min"] for r in rows] == [0.0, 3.0, 6.0]
    assert np.isnan(describe_sequence(masks)[0]["growth_rate_um3_per_min"])  # unknown interval


def test_compare_refuses_sets_with_different_frame_intervals(tmp_path, capsys):
    masks = _ball_sequence()
    for name, interval in (("a", 2.0), ("b", 5.0)):
        (tmp_path / name).mkdir()
        write_tiff(tmp_path / name / "cell.tif", masks, axes="TZYX", spacing=(1.0, 1.0, 1.0), frame_interval=interval)
    with pytest.raises(InputError, match="every 2 min.*every 5 min"):
        compare(tmp_path / "a", tmp_path / "b", tmp_path / "r", figures=False)
    out = compare(tmp_path / "a", tmp_path / "b", tmp_path / "r", figures=False, timing="physical")
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert "shape_change" not in metrics["descriptors"] and "volume_um3" in metrics["descriptors"]
    assert main(["measure", str(tmp_path / "a"), "--out", str(tmp_path / "a.csv")]) == 0
    assert "frame_interval_min" in (tmp_path / "a.csv").read_text().splitlines()[0]
