"""Shape descriptors against closed forms (balls, ellipsoids, tori, disks) and the measure command."""

import math

import numpy as np
import pytest

from cellinr.cli import main
from cellinr.errors import InputError, ParameterError
from cellinr.io.tiff import write_tiff
from cellinr.measurement.descriptors import (
    DESCRIPTORS_2D,
    DESCRIPTORS_3D,
    describe_mask,
)
from cellinr.measurement.tables import describe_sequence, measure, read_rows


def ellipsoid(shape, centre_um, radii_um, spacing=(1.0, 1.0, 1.0)):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g * sp - c) / r) ** 2 for g, sp, c, r in zip(grids, spacing, centre_um, radii_um)) <= 1.0


def ellipsoid_area(a, b, c):
    """Knud Thomsen's approximation (relative error below 1.1 %)."""
    p = 1.6075
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def test_ball_closed_forms():
    r = 20.0
    row = describe_mask(ellipsoid((64, 64, 64), (31.6, 32.3, 31.8), (r, r, r)), (1.0, 1.0, 1.0))
    assert row["volume_um3"] == pytest.approx(4 / 3 * math.pi * r**3, rel=0.02)
    assert row["surface_area_um2"] == pytest.approx(4 * math.pi * r**2, rel=0.02)
    assert abs(row["sphericity"] - 1.0) < 0.03
    assert row["equivalent_diameter_um"] == pytest.approx(2 * r, rel=0.01)
    for key in ("major_axis_um", "intermediate_axis_um", "minor_axis_um"):
        assert row[key] == pytest.approx(2 * r, rel=0.02)
    assert row["elongation"] > 0.98 and row["flatness"] > 0.98
    assert row["extent"] == pytest.approx(math.pi / 6, rel=0.03)  # ball in its bounding cube
    assert 0.97 < row["solidity"] <= 1.0
    assert row["n_components"] == 1 and row["euler_characteristic"] == 1
    assert row["mean_curvature_mean_per_um"] == pytest.approx(1 / r, rel=0.03)
    assert row["normalised_mean_curvature"] == pytest.approx(1.0, abs=0.03)
    # Gauss-Bonnet on a closed sphere-like mesh: integral of K = 4 pi
    assert row["gaussian_curvature_mean_per_um2"] * row["surface_area_um2"] == pytest.approx(4 * math.pi, rel=0.02)
    assert row["concave_area_fraction"] < 0.05
    assert row["mean_curvature_p05_per_um"] > 0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.5, 1.0, 0.8)])
def test_ellipsoid_closed_forms(spacing):
    radii = (26.0, 18.0, 12.0)  # z, y, x semi-axes in microns
    shape = tuple(int(64 * 1.0 / s) if s > 1 else 64 for s in spacing)
    centre = tuple(s * sp / 2 - 0.3 for s, sp in zip(shape, spacing))
    row = describe_mask(ellipsoid(shape, centre, radii, spacing), spacing)
    assert row["volume_um3"] == pytest.approx(4 / 3 * math.pi * np.prod(radii), rel=0.02)
    assert row["surface_area_um2"] == pytest.approx(ellipsoid_area(*radii), rel=0.02)
    assert row["major_axis_um"] == pytest.approx(2 * radii[0], rel=0.03)
    assert row["intermediate_axis_um"] == pytest.approx(2 * radii[1], rel=0.03)
    assert row["minor_axis_um"] == pytest.approx(2 * radii[2], rel=0.03)
    assert row["elongation"] == pytest.approx(radii[1] / radii[0], rel=0.03)
    assert row["flatness"] == pytest.approx(radii[2] / radii[0], rel=0.03)
    assert row["sphericity"] < 0.95


def test_topology_components_and_concavity():
    z, y, x = np.ogrid[:48, :48, :48]
    torus = (np.sqrt((x - 23.7) ** 2 + (y - 24.2) ** 2) - 13) ** 2 + (z - 24) ** 2 <= 5**2
    row = describe_mask(torus)
    assert row["n_components"] == 1 and row["euler_characteristic"] == 0
    assert row["solidity"] < 0.8
    # the integral of K over a torus is 0
    assert abs(row["gaussian_curvature_mean_per_um2"] * row["surface_area_um2"]) < 0.2
    two = ellipsoid((40, 40, 60), (20, 20, 14), (8, 8, 8)) | ellipsoid((40, 40, 60), (20, 20, 44), (8, 8, 8))
    row = describe_mask(two)
    assert row["n_components"] == 2 and row["euler_characteristic"] == 2
    # two fused balls: the neck is concave, the hull holds more than the shape
    peanut = ellipsoid((48, 48, 64), (24, 24, 21), (12, 12, 12)) | ellipsoid((48, 48, 64), (24, 24, 41), (12, 12, 12))
    row = describe_mask(peanut)
    assert row["concave_area_fraction"] > 0.02 and row["mean_curvature_p05_per_um"] < 0
    assert row["solidity"] < 0.9 and row["n_components"] == 1


def test_disk_and_ellipse_2d():
    y, x = np.ogrid[:80, :80]
    r = 25.0
    disk = (y - 39.6) ** 2 + (x - 40.2) ** 2 <= r * r
    row = describe_mask(disk, (0.5, 0.5))
    assert set(row) == set(DESCRIPTORS_2D)
    assert row["area_um2"] == pytest.approx(math.pi * (r * 0.5) ** 2, rel=0.02)
    assert row["perimeter_um"] == pytest.approx(2 * math.pi * r * 0.5, rel=0.02)
    assert abs(row["circularity"] - 1) < 0.03
    ell = ((y - 40) / 30.0) ** 2 + ((x - 40) / 15.0) ** 2 <= 1
    row = describe_mask(ell)
    assert row["major_axis_um"] == pytest.approx(60, rel=0.03)
    assert row["minor_axis_um"] == pytest.approx(30, rel=0.03)
    assert row["elongation"] == pytest.approx(0.5, rel=0.03)


def test_empty_and_bad_masks():
    row = describe_mask(np.zeros((10, 10, 10), bool))
    assert set(row) == set(DESCRIPTORS_3D)
    assert row["volume_um3"] == 0 and row["n_components"] == 0 and math.isnan(row["sphericity"])
    with pytest.raises(InputError, match="2D"):
        describe_mask(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ParameterError, match="spacing"):
        describe_mask(np.ones((4, 4, 4)), (1.0, -1.0, 1.0))
    with pytest.raises(InputError, match="different sizes"):
        describe_sequence([np.ones((4, 4, 4)), np.ones((5, 5, 5))])


def test_sequence_growth_and_shape_change():
    radii = [8.0, 9.0, 10.0, 11.0]
    masks = np.stack([ellipsoid((32, 32, 32), (16, 16, 16), (r, r, r)) for r in radii])
    rows = describe_sequence(masks, (1.0, 1.0, 1.0), name="grow")
    vols = [4 / 3 * math.pi * r**3 for r in radii]
    slope = np.polyfit(np.arange(4), vols, 1)[0]
    assert [r["frame"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["growth_rate_um3_per_frame"] == pytest.approx(slope, rel=0.03)
    assert math.isnan(rows[0]["shape_change"])
    # concentric balls: 1 - Dice = 1 - 2 r0^3 / (r0^3 + r1^3)
    expected = 1 - 2 * 8.0**3 / (8.0**3 + 9.0**3)
    assert rows[1]["shape_change"] == pytest.approx(expected, abs=0.02)
    still = describe_sequence(np.stack([masks[0]] * 3), name="still")
    assert still[2]["shape_change"] == 0 and abs(still[0]["growth_rate_um3_per_frame"]) < 1e-9


def test_measure_files_labels_and_csv(tmp_path):
    labels = np.zeros((2, 24, 40, 40), np.uint16)
    for t in range(2):
        labels[t][ellipsoid((24, 40, 40), (12, 12, 12), (6 + t, 6 + t, 6 + t))] = 3
        labels[t][ellipsoid((24, 40, 40), (12, 28, 28), (5, 5, 5))] = 7
    labels[1][ellipsoid((24, 40, 40), (12, 30, 8), (3, 3, 3))] = 9  # a cell entering in frame 1
    write_tiff(tmp_path / "cells.tif", labels, axes="TZYX", spacing=(2.0, 0.5, 0.5))
    table = tmp_path.with_name(tmp_path.name + "_out.csv")  # outside the input folder
    rows = measure(tmp_path, table)
    assert sorted({r["sequence"] for r in rows}) == ["cells_label3", "cells_label7", "cells_label9"]
    assert len(rows) == 5 and [r["n_frames"] for r in rows if r["label"] == 9] == [1]
    lab7 = [r for r in rows if r["label"] == 7][0]
    assert lab7["volume_um3"] == pytest.approx(4 / 3 * math.pi * 125 * 0.5, rel=0.05)  # metadata voxel 0.5 um3
    back = read_rows(table)
    assert len(back) == 5 and back[0]["volume_um3"] == pytest.approx(rows[0]["volume_um3"])
    argv = ["measure", str(tmp_path / "cells.tif"), "--out", str(tmp_path / "b.csv"), "--spacing", "1", "1", "1"]
    assert main(argv) == 0
    assert read_rows(tmp_path / "b.csv")[0]["volume_um3"] == pytest.approx(2 * rows[0]["volume_um3"])
    # parallel measurement of a folder gives the same rows in the same order
    write_tiff(tmp_path / "more.tif", (labels == 3).astype(np.uint8), axes="TZYX", spacing=(2.0, 0.5, 0.5))
    serial = measure(tmp_path)
    parallel = measure(tmp_path, workers=2)
    assert [r["sequence"] for r in parallel] == [r["sequence"] for r in serial] and len(serial) == 7
    assert [r["surface_area_um2"] for r in parallel] == [r["surface_area_um2"] for r in serial]
    # the table records the voxel size it used; a generated folder's projection previews are not cells
    assert rows[0]["spacing_um"] == "2 0.5 0.5" and read_rows(tmp_path / "b.csv")[0]["spacing_um"] == "1 1 1"
    write_tiff(tmp_path / "more_mip.tif", (labels == 3).max(axis=1).astype(np.uint8), axes="TYX")
    assert [r["sequence"] for r in measure(tmp_path)] == [r["sequence"] for r in serial]


def test_measure_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["measure", str(tmp_path / "empty"), "--out", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no masks" in err and len(err.splitlines()) == 1
    write_tiff(tmp_path / "m.tif", np.ones((4, 5, 6), np.uint8), axes="ZYX")
    assert main(["measure", str(tmp_path / "m.tif"), "--out", str(tmp_path / "t.csv"), "--spacing", "1", "2"]) == 2
    assert "spacing" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("x")
    assert main(["measure", str(tmp_path / "m.tif"), "--out", str(tmp_path / "t.csv")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "m.tif"), "--out", str(tmp_path / "empty"), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a folder" in err and len(err.splitlines()) == 1


REAL = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared/data/real"


def test_real_label_images():
    if not REAL.is_dir():
        pytest.skip(f"real data folder {REAL} not found")
    rows = measure(REAL / "platynereis_nuclei_labels.tif")
    assert len(rows) == 36 and len({r["sequence"] for r in rows}) == 36  # one sequence per nucleus
    for r in rows:
        assert r["volume_um3"] > 0 and 0.5 < r["sphericity"] <= 1.0 and 0.5 < r["solidity"] <= 1.0
        assert r["n_components"] >= 1
    # human iPS cell nuclei (voxel 0.29 x 0.26 x 0.26 um): about 10 um across, rounded
    cells3d = [r for r in measure(REAL / "cells3d_nuclei_labels.tif", spacing=(0.29, 0.26, 0.26))
               if r["volume_um3"] > 100]  # a few label fragments at the image border
    assert len(cells3d) >= 15
    assert 7 < np.median([r["equivalent_diameter_um"] for r in cells3d]) < 15
    assert 0.7 < np.median([r["sphericity"] for r in cells3d]) <= 1.0
    assert all(r["major_axis_um"] >= r["intermediate_axis_um"] >= r["minor_axis_um"] > 0 for r in cells3d)
    flat = measure(REAL / "dsb2018_nuclei_labels.tif")
    assert len(flat) == 125 and all(r["ndim"] == 2 for r in flat)
    assert all(0 < r["circularity"] <= 1.0 and r["solidity"] <= 1.0 for r in flat)
