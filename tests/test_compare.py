"""Set comparison: two-sample scores on simulated cells, the report, and bad input."""

import json

import numpy as np
import pytest

from cellinr.cli import main
from cellinr.data import simulation as simulate
from cellinr.errors import InputError, OutputExistsError, ParameterError
from cellinr.io.tiff import write_tiff
from cellinr.measurement.comparison import compare, coverage_mmd, one_nn_accuracy
from cellinr.measurement.tables import describe_sequence, read_rows


def simulated_rows(kind, indices, *, frames=2, size=32, seed=0):
    rows = []
    for i in indices:
        seq = simulate.simulate_sequence(kind, i, frames=frames, size=size, seed=seed)
        rows += describe_sequence(seq.masks, seq.spacing, name=f"{kind}{i}")
    return rows


@pytest.fixture(scope="module")
def simulated():
    return {
        "deforming": simulated_rows("deforming", range(40)),
        "dividing": simulated_rows("dividing", range(12)),
        "filopodial": simulated_rows("filopodial", range(12)),
    }


def _multi(out):
    return json.loads((out / "metrics.json").read_text())["multivariate"]


def test_one_nn_accuracy_same_vs_different_kinds(simulated, tmp_path):
    deforming = simulated["deforming"]
    half = len(deforming) // 2  # 20 sequences each
    same = _multi(compare(deforming[:half], deforming[half:], tmp_path / "same", figures=False))
    # 0.5 expected; seeds 0-4 gave 0.39-0.54 with 20 + 20 sequences
    assert 0.35 <= same["one_nn_accuracy"] <= 0.65
    assert same["coverage"] >= 0.4
    other = _multi(compare(simulated["dividing"], simulated["filopodial"], tmp_path / "other", figures=False))
    assert other["one_nn_accuracy"] >= 0.9
    assert other["mmd"] > same["mmd"]
    assert other["one_nn_accuracy_sequences"] >= 0.9


def test_one_nn_accuracy_and_coverage_closed_cases():
    x = np.array([[0.0], [1.0], [2.0]])
    assert one_nn_accuracy(x, x + 100) == 1.0
    assert one_nn_accuracy(x, x + 0.01) == 0.0  # every point's neighbour is its twin in the other set
    # frames of one sequence are near-duplicates: without leaving out the query's sequence the
    # sets look separable although every frame has a twin in the other set
    a = np.array([[0.0], [0.001], [10.0], [10.001]])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert one_nn_accuracy(a, a + 0.01) == 1.0
    assert one_nn_accuracy(a, a + 0.01, groups) == 0.0
    # a set of one sequence has no neighbour of its own to offer: undefined, not a flattering ~0.5
    assert np.isnan(one_nn_accuracy(a, a + 0.01, np.array([0, 0, 0, 0, 2, 2, 3, 3])))
    assert np.isnan(one_nn_accuracy(a[:1], a))
    # unequal set sizes from one distribution: balanced accuracy stays at 0.5 (plain accuracy ~0.68)
    rng = np.random.default_rng(0)
    scores = [one_nn_accuracy(rng.normal(size=(10, 3)), rng.normal(size=(40, 3))) for _ in range(40)]
    assert abs(np.mean(scores) - 0.5) < 0.06
    d = np.array([[0.0, 5.0], [1.0, 5.0], [9.0, 9.0]])  # reference x generated
    cov, mmd = coverage_mmd(d)
    assert cov == pytest.approx(1 / 3) and mmd == pytest.approx((0 + 1 + 9) / 3)


def test_report_renders_from_masks(tmp_path):
    for folder, kind in (("real", "deforming"), ("generated", "filopodial")):
        for i in range(3):
            seq = simulate.simulate_sequence(kind, i, frames=3, size=32, seed=1)
            write_tiff(tmp_path / folder / f"{kind}{i}.tif", seq.masks, axes="TZYX", spacing=seq.spacing)
    out = compare(tmp_path / "real", tmp_path / "generated", tmp_path / "report", names=("real", "generated"))
    for name in ("report.md", "report.html", "metrics.json", "descriptor_stats.csv",
                 "descriptors_real.csv", "descriptors_generated.csv"):
        assert (out / name).is_file(), name
    for fig in ("distributions", "timecourses", "embedding", "examples"):
        png = out / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{fig}.png" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "<table>" in html and "1-NN accuracy" in html
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sets"]["real"]["sequences"] == 3 and metrics["sets"]["generated"]["frames"] == 9
    assert 0 <= metrics["univariate"]["volume_um3"]["ks_statistic"] <= 1
    # the descriptor CSVs can be compared again, and a subset of descriptors chosen
    out2 = compare(out / "descriptors_real.csv", out / "descriptors_generated.csv", tmp_path / "again",
                   descriptors=["volume_um3", "sphericity", "shape_change"], figures=False)
    chosen = json.loads((out2 / "metrics.json").read_text())["descriptors"]
    assert chosen == ["volume_um3", "sphericity", "shape_change"]
    with pytest.raises(OutputExistsError):
        compare(tmp_path / "real", tmp_path / "generated", tmp_path / "report")


def test_bad_input_gives_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    mask = np.zeros((1, 12, 12, 12), np.uint8)
    mask[0, 3:9, 3:9, 3:9] = 1
    write_tiff(tmp_path / "a" / "m.tif", mask, axes="TZYX")
    write_tiff(tmp_path / "flat" / "m.tif", mask[0, 0], axes="YX")
    cases = [
        (["compare", str(tmp_path / "a"), str(tmp_path / "empty")], "no mask TIFFs"),
        (["compare", str(tmp_path / "a"), str(tmp_path / "missing")], "no such file"),
        (["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--descriptors", "volume_um3", "wobble"],
         "unknown wobble"),
        (["compare", str(tmp_path / "a"), str(tmp_path / "flat")], "2D"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out", str(tmp_path / "rep")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "rep").exists()
    with pytest.raises(ParameterError):
        compare(tmp_path / "a", tmp_path / "a", tmp_path / "r", names=("x", "x"))
    with pytest.raises(InputError):
        compare([], tmp_path / "a", tmp_path / "r")


# --------------------------------------------------------------------------------------------
# rotation report and activation comparison


def _random_rotation(rng):
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def test_rotation_metrics_closed_form():
    from cellinr.evaluation.rotations import infer_groups, rotation_metrics

    rng = np.random.default_rng(0)
    names, codes, learned, applied = [], [], [], {}
    for cell in range(3):
        base_code = rng.normal(size=8) * 10
        canonical = _random_rotation(rng)  # the unidentifiable common orientation
        for k in range(3):
            name = f"cell{cell}_rot{k}"
            a = _random_rotation(rng)
            names.append(name)
            codes.append(base_code + rng.normal(size=8) * 0.01)
            learned.append(canonical @ a.T)  # perfect recovery: R_i A_i = canonical
            applied[name] = a
    assert infer_groups(names) == {f"cell{c}": [f"cell{c}_rot{k}" for k in range(3)] for c in range(3)}
    res = rotation_metrics(np.array(codes), np.array(learned), names, applied=applied)
    assert res["codes"]["retrieval"] == 1.0 and res["codes"]["ratio_within_between"] < 0.01
    assert res["rotations"]["pair_error_max_deg"] < 1e-4
    assert res["rotations"]["applied_pair_angle_mean_deg"] > 30
    # spoil one copy's rotation by 20 degrees about z: its pairs show 20 degrees
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    learned[0] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ learned[0]
    res = rotation_metrics(np.array(codes), np.array(learned), names, applied=applied)
    assert res["rotations"]["pair_error_max_deg"] == pytest.approx(20, abs=1e-6)
    with pytest.raises(InputError, match="does not have"):
        rotation_metrics(np.array(codes), np.array(learned), names, groups={"x": ["nope", names[0]]})


def _write_dataset(folder, shapes, names, size=16, clamp=6):
    from scipy import ndimage as ndi

    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence

    folder.mkdir(parents=True)
    entries = []
    for name, masks in zip(names, shapes):
        frames = [np.clip(ndi.distance_transform_edt(~m) - ndi.distance_transform_edt(m), -clamp, clamp) / clamp
                  for m in masks]
        write_sequence(folder / f"{name}.h5", frames, n_frames=len(frames), shape=(size,) * 3)
        entries.append({"name": name, "file": f"{name}.h5", "frames": len(frames), "shape": [size] * 3})
    write_manifest(folder, new_manifest(size=size, clamp=clamp, voxel_size_um=0.5, scale_um_per_unit=clamp * 0.5,
                                        sources=[], sequences=entries))
    return folder


def _ellipsoid_masks(size, radii, rotation, frames=2):
    """Ellipsoid with semi-axes ``radii`` (voxels, along x, y, z of the body) rotated by ``rotation`` (xyz)."""
    c = (size - 1) / 2
    z, y, x = np.mgrid[:size, :size, :size].astype(float) - c
    p = np.stack([x, y, z], -1) @ rotation  # body coordinates R^T p as row vectors
    out = []
    for t in range(frames):
        r = np.asarray(radii) * (1 + 0.1 * t)
        out.append(((p / r) ** 2).sum(-1) <= 1)
    return out


def test_rotation_report_end_to_end(tmp_path, capsys):
    import torch

    from cellinr.training.shape import train
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    shapes, names, applied = [], [], {}
    for cell, radii in enumerate([(6, 3.5, 2.5), (5, 5, 2.5)]):
        for k in range(2):
            a = _random_rotation(rng)
            shapes.append(_ellipsoid_masks(16, radii, a))
            names.append(f"c{cell}_rot{k}")
            applied[names[-1]] = a.tolist()
    ds = _write_dataset(tmp_path / "ds", shapes, names)
    run = train(ds, tmp_path / "run", preset="tiny", epochs=2, rotations=True, device="cpu", seed=0, progress=False)
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"rotations": applied}))
    assert main(["rotation-report", str(run), "--groups", str(groups), "--out", str(tmp_path / "rep")]) == 0
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["codes"]["n_groups"] == 2 and metrics["rotations"]["n_pairs"] == 2
    assert 0 <= metrics["rotations"]["pair_error_max_deg"] <= 180
    for name in ("report.md", "report.html", "sequences.csv", "code_matrix.png", "code_distances.png"):
        assert (tmp_path / "rep" / name).is_file(), name
    groups.write_text(json.dumps({"groups": {"a": ["c0_rot0", "ghost"]}}))
    capsys.readouterr()
    assert main(["rotation-report", str(run), "--groups", str(groups), "--out", str(tmp_path / "rep2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ghost" in err and len(err.splitlines()) == 1


def test_compare_activations_smoke(tmp_path):
    import torch

    from functools import partial

    from cellinr.evaluation.activations import compare_activations
    from cellinr.measurement.protrusions import count_protrusions

    count_protrusions = partial(count_protrusions, radius_um=2.0)  # 2 voxels

    torch.set_num_threads(1)
    size = 20
    c = (size - 1) / 2
    z, y, x = np.mgrid[:size, :size, :size].astype(float) - c
    body = x**2 + y**2 + z**2 <= 25
    filopodium = (y**2 + z**2 <= 1.0) & (x > 0) & (x < 9)  # thin rod sticking out along +x
    assert count_protrusions(body) == 0 and count_protrusions(body | filopodium) == 1
    assert count_protrusions(body | filopodium | ((x**2 + y**2 <= 1.0) & (z < 0) & (z > -9))) == 2
    # simulated cells: smooth deforming cells have none; filopodial cells most of the simulator's
    # protrusions (short ones are below the resolution of a 40^3 grid)
    assert count_protrusions(simulate.simulate_sequence("deforming", 0, frames=1, size=40).masks[0]) == 0
    filo = simulate.simulate_sequence("filopodial", 0, frames=2, size=40)
    truth = filo.truth["frames_truth"][-1]["n_protrusions"]
    assert truth / 2 <= count_protrusions(filo.masks[-1]) <= truth
    ds = _write_dataset(tmp_path / "ds", [[body, body | filopodium]], ["cell"], size=size)
    out = compare_activations(ds, tmp_path / "act", preset="tiny", epochs=1, device="cpu", progress=False)
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("activation,parameters,dice_mean") and len(summary) == 3
    assert summary[1].split(",")[1] == summary[2].split(",")[1]  # equal parameter budget
    # frames without a surface distance (an empty reconstruction) are counted, not silently dropped
    assert summary[0].endswith(",frames_without_surface_distance")
    table = read_rows(out / "table.csv")
    for line, act in zip(summary[1:], ("sine", "relu")):
        assert int(line.split(",")[-1]) == sum(not np.isfinite(r[f"assd_um_{act}"]) for r in table)
    for name in ("figure.png", "table.csv", "report.md", "metrics.json", "runs/sine/run.json", "runs/relu/run.json"):
        assert (out / name).is_file(), name
    # a rerun with the same options reuses the runs; other options need overwrite
    model = (out / "runs/sine/model.safetensors").stat().st_mtime_ns
    compare_activations(ds, out, preset="tiny", epochs=1, device="cpu", progress=False)
    assert (out / "runs/sine/model.safetensors").stat().st_mtime_ns == model
    with pytest.raises(OutputExistsError):
        compare_activations(ds, out, preset="tiny", epochs=2, device="cpu", progress=False)
