"""Population scenes: placement without overlap, lineage, CTC export checked by py-ctcmetrics, quality
measures, calibration inputs, resumable output, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cellinr.errors import InputError, OutputExistsError, ParameterError
from cellinr.io.ctc import (
    check_ctc_sequence,
    read_ctc_sequence,
    read_man_track,
    write_ctc_sequence,
)
from cellinr.scenes.calibration import PROBE_TIMES
from cellinr.scenes.lineage import CellLineage, NodeCounter, TrackBook, clean_mask
from cellinr.scenes.placement import Body, Field, Occupancy, crop_mask, place_initial

# small scenes: a few seconds each on one shared core
SMALL = dict(dims=(8, 64, 64), frames=6, cells=4, voxel_size=2.0, seed=3)


def _ball(shape, centre, r):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= r * r


# -- placement and lineage on analytic masks -------------------------------------------------------------
def test_occupancy_finds_overlaps_across_the_periodic_seam():
    field = Field((4, 32, 32), margin=10)
    mask, off = crop_mask(_ball((4, 9, 9), (1.5, 4, 4), 4))
    half = np.array([1, 4, 4])
    a = Body(mask, off, half, np.array([1.5, 1.0, 20.0]))
    b = Body(mask, off, half, np.array([1.5, 51.0, 20.0]))  # Y wraps at 52: 2 voxels from a
    far = Body(mask, off, half, np.array([1.5, 26.0, 20.0]))
    occ = Occupancy(field)
    assert occ.conflicts([a, b]) != {}
    assert occ.conflicts([a, far]) == {}
    touching = Body(mask, off, half, np.array([1.5, 1.0, 29.0]))  # 9 apart: faces touch, no shared voxel
    assert occ.conflicts([a, touching]) == {}


def test_place_initial_reports_the_largest_density_that_fits():
    field = Field((1, 16, 16), margin=9)
    mask, off = crop_mask(_ball((1, 9, 9), (0, 4, 4), 4))
    bodies = [Body(mask, off, np.array([0, 4, 4]), np.zeros(3)) for _ in range(40)]
    with pytest.raises(ParameterError, match="largest density that fits"):
        place_initial(field, bodies, [True] * 40, np.random.default_rng(0), attempts=30)


def test_lineage_division_gives_daughters_with_their_parent():
    one = _ball((1, 20, 30), (0, 10, 15), 6)
    two = _ball((1, 20, 30), (0, 10, 8), 5) | _ball((1, 20, 30), (0, 10, 22), 5)
    counter, cell = NodeCounter(), CellLineage()
    book = TrackBook(counter)
    n0 = cell.update(clean_mask(one)[0], np.zeros(3), counter)
    assert book.frame(0, n0) == {n0[0]: 1}
    n1 = cell.update(clean_mask(one)[0], np.zeros(3), counter)
    assert n1 == n0 and book.frame(1, n1)[n1[0]] == 1
    comps, n = clean_mask(two)
    assert n == 2
    n2 = cell.update(comps, np.zeros(3), counter)
    labels = book.frame(2, n2)
    tracks = {t.label: t for t in book.track_list()}
    assert tracks[1].end == 1
    assert sorted(labels.values()) == [2, 3]
    assert all(tracks[k].parent == 1 and tracks[k].begin == 2 for k in (2, 3))
    # a daughter that leaves and comes back is a new, parentless track
    book.frame(3, [n2[0]])
    again = book.frame(4, [n2[0], n2[1]])
    assert book.tracks[again[n2[1]]].parent == 0 and book.tracks[again[n2[1]]].begin == 4


def test_clean_mask_drops_fragments():
    mask = _ball((1, 30, 30), (0, 15, 15), 8)
    mask[0, 0, 0] = True
    comps, n = clean_mask(mask)
    assert n == 1 and not comps[0, 0, 0]


# -- a generated scene ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frames_3d():
    import torch

    from cellinr.scenes.composer import Scene, SceneSpec

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scene = Scene(SceneSpec(models=["deforming", "dividing"], **SMALL))
        frames = [(f.labels.copy(), f.cells) for f in scene.frames()]
        return frames, scene.tracks()
    finally:
        torch.set_num_threads(n)


def test_no_two_cells_overlap_in_any_frame(frames_3d):
    frames, _ = frames_3d
    for t, (labels, cells) in enumerate(frames):
        covered = np.zeros(labels.shape, bool)
        seen_cells = 0
        for index, corner, mask in cells:
            lo = np.maximum(corner, 0)
            hi = np.minimum(corner + mask.shape, labels.shape)
            if np.any(hi <= lo):
                continue
            sub = mask[tuple(slice(lo[i] - corner[i], hi[i] - corner[i]) for i in range(3))]
            if not sub.any():
                continue
            seen_cells += 1
            full = np.zeros(labels.shape, bool)
            full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = sub
            own = np.unique(labels[full])
            assert 0 not in own, f"frame {t}: cell {index} has unlabelled voxels"
            # the cell's labels cover exactly its own generated mask: nothing of it was overwritten
            np.testing.assert_array_equal(np.isin(labels, own), full, err_msg=f"frame {t}, cell {index}")
            assert not (covered & full).any(), f"frame {t}: cell {index} overlaps another cell"
            covered |= full
        assert seen_cells > 0
        np.testing.assert_array_equal(covered, labels > 0)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    import torch

    from cellinr.scenes.composer import SceneSpec
    from cellinr.scenes.export import write_scene

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("scene") / "div"
        # one model cycle in the scene: the dividing model's cells divide in it
        spec = SceneSpec(models=["dividing"], dims=(8, 64, 64), frames=6, cells=4, voxel_size=2.0, seed=1,
                         cycle_frames=6)
        path, done = write_scene(spec, out, mip=True)
        assert done
        return path, spec
    finally:
        torch.set_num_threads(n)


def test_ctc_export_is_consistent(written):
    path, spec = written
    seq = read_ctc_sequence(path / "ctc", 1)
    assert seq.images.shape == (spec.frames, *spec.dims)
    assert check_ctc_sequence(seq) == []
    tracks = read_man_track(path / "ctc" / "01_GT" / "TRA" / "man_track.txt")
    for tr in tracks:  # every label present in exactly the frames it claims
        present = [t for t in range(spec.frames) if (seq.tra[t] == tr.label).any()]
        assert present == list(range(tr.begin, tr.end + 1)), tr
    by = {t.label: t for t in tracks}
    daughters = [t for t in tracks if t.parent]
    assert daughters, "the dividing model divided in no visible cell"
    for d in daughters:  # parents end the frame before their daughters begin
        assert by[d.parent].end == d.begin - 1
    np.testing.assert_array_equal(seq.seg, seq.tra)
    from cellinr.io.tiff import read_tiff
    from cellinr.scenes.export import project_labels

    mip = read_tiff(path / "mip" / "masks" / "t002.tif").data
    np.testing.assert_array_equal(mip, project_labels(seq.tra[2]))
    assert set(np.unique(mip)) <= set(np.unique(seq.tra[2]))
    assert read_tiff(path / "mip" / "images" / "t002.tif").data.shape == spec.dims[1:]
    pairs = sorted((path / "pairs" / "images").iterdir())
    assert len(pairs) == spec.frames and len(list((path / "pairs" / "masks").iterdir())) == spec.frames


def test_ctc_metrics_score_the_ground_truth_perfectly(written, tmp_path):
    pytest.importorskip("ctc_metrics")
    from cellinr.scenes.difficulty import gt_as_result, score

    path, _ = written
    res = gt_as_result(path / "ctc" / "01_GT", tmp_path / "01_RES")
    scores = score(res, path / "ctc" / "01_GT")
    assert scores["Valid"] == 1
    assert scores["SEG"] == pytest.approx(1.0) and scores["TRA"] == pytest.approx(1.0)
    assert scores["DET"] == pytest.approx(1.0)
    # and a damaged result scores below 1: the check can fail
    lines = (res / "res_track.txt").read_text().splitlines(True)
    (res / "res_track.txt").write_text("".join(lines[1:]))
    assert score(res, path / "ctc" / "01_GT")["Valid"] == 0


def test_rerun_skips_and_killed_run_restarts_cleanly(written, tmp_path):
    from cellinr.scenes.export import _temporary, write_scene

    path, spec = written
    stamp = (path / "scene.json").stat().st_mtime_ns
    assert write_scene(spec, path, mip=True) == (path, False)
    assert (path / "scene.json").stat().st_mtime_ns == stamp
    # a different scene into the same folder is refused
    other = type(spec)(**{**spec.to_dict(), "seed": 9, "motion": spec.motion})
    with pytest.raises(OutputExistsError):
        write_scene(other, path, mip=True)
    # a failure leaves nothing under the final name; a killed run's leftovers are removed
    small = type(spec)(models=["deforming"], dims=(1, 48, 48), frames=2, cells=2, voxel_size=2.0)
    out = tmp_path / "s"

    def boom(folder):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_scene(small, out, after=boom)
    assert not out.exists() and not _temporary(out).exists()
    _temporary(out).mkdir()
    (_temporary(out) / "junk.tif").write_bytes(b"partial")
    write_scene(small, out)
    assert (out / "scene.json").exists() and not _temporary(out).exists()
    assert not (out / "junk.tif").exists()


def test_same_seed_same_bytes_2d(tmp_path):
    import torch

    from cellinr.scenes.composer import SceneSpec
    from cellinr.scenes.export import write_scene

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = SceneSpec(models=["deforming"], dims=(1, 64, 64), frames=4, cells=4, voxel_size=2.0, seed=5)
        a, _ = write_scene(spec, tmp_path / "a")
        b, _ = write_scene(spec, tmp_path / "b")
    finally:
        torch.set_num_threads(n)

    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    da, db = digest(a), digest(b)
    assert da == db and len(da) > 10
    first = read_ctc_sequence(a / "ctc", 1)
    assert first.images.ndim == 3 and first.tra.max() > 0  # (T, Y, X): a 2D+t scene


def test_too_many_cells_is_one_clear_error(tmp_path):
    from cellinr.cli import main

    rc = main(["scene", "--model", "deforming", "--cells", "400", "--dims", "1", "40", "40", "--frames", "2",
               "--voxel-size", "2", "--out", str(tmp_path / "x")])
    assert rc == 2 and not (tmp_path / "x").exists()


def test_bad_density_and_missing_args(capsys, tmp_path):
    from cellinr.cli import main

    assert main(["scene", "--model", "deforming", "--density", "1.5", "--dims", "1", "64", "64", "--frames", "2",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--density" in capsys.readouterr().err
    assert main(["scene", "--model", "deforming", "--cells", "2", "--out", str(tmp_path / "y")]) == 2
    assert "--dims" in capsys.readouterr().err


# -- quality measures and real-set inputs ---------------------------------------------------------------
def _toy_ctc(root: Path, *, frames=3, bg=100.0, fg=200.0, noise=10.0, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    labels = np.zeros((frames, 64, 64), np.uint16)
    for t in range(frames):
        labels[t][_ball((64, 64), (20, 20 + t), 8)] = 1
        labels[t][_ball((64, 64), (44, 40), 8)] = 2
    images = (np.where(labels > 0, fg, bg) + noise * rng.standard_normal(labels.shape)).astype(np.float32)
    write_ctc_sequence(root, 1, images, labels)
    return root


def test_quality_measures_on_known_data(tmp_path):
    from cellinr.scenes.quality import dataset_quality, quality_table

    q = dataset_quality(_toy_ctc(tmp_path / "toy"))
    assert q["snr"] == pytest.approx(10.0, rel=0.1)
    assert q["contrast_ratio"] == pytest.approx(2.0, rel=0.02)
    assert q["het_inside"] == pytest.approx(0.1, rel=0.15)
    assert q["cells_per_frame"] == 2 and q["mitosis_rate"] == 0
    assert q["drift"][2] == pytest.approx(0.5, abs=0.05)  # one cell moves 1 px per frame in X, the other not
    assert 0.8 < q["overlap"] < 1.0
    assert q["density"] == pytest.approx(2 * np.pi * 64 / 4096, rel=0.1)
    assert "snr" in quality_table({"a": q, "b": q}, reference="a")


def test_real_set_errors_name_the_file(tmp_path):
    from cellinr.scenes.quality import dataset_quality

    root = _toy_ctc(tmp_path / "toy")
    (root / "01_GT" / "TRA" / "man_track.txt").unlink()
    with pytest.raises(InputError, match="man_track.txt"):
        dataset_quality(root)
    root = _toy_ctc(tmp_path / "toy2")
    (root / "01_GT" / "TRA" / "man_track002.tif").unlink()
    with pytest.raises(InputError, match="man_track###"):
        dataset_quality(root)


def test_like_from_image_and_labels(tmp_path):
    from cellinr.io.tiff import write_tiff
    from cellinr.scenes.calibration import calibrate, like_to_ctc

    root = _toy_ctc(tmp_path / "toy", frames=4)
    seq = read_ctc_sequence(root, 1)
    write_tiff(tmp_path / "img.tif", seq.images, axes="TYX")
    write_tiff(tmp_path / "lab.tif", seq.seg, axes="TYX")
    ctc = like_to_ctc([tmp_path / "img.tif", tmp_path / "lab.tif"], tmp_path / "work")
    cal = calibrate(ctc)
    assert cal.dims == (1, 64, 64) and cal.frames == 4
    assert cal.render.background == pytest.approx(100, rel=0.1)


def test_baseline_runs_and_scores(written):
    pytest.importorskip("laptrack")
    pytest.importorskip("ctc_metrics")
    from cellinr.scenes.difficulty import scene_difficulty

    path, _ = written
    scores = scene_difficulty(path / "ctc")
    assert scores["Valid"] == 1
    for m in ("SEG", "DET", "TRA"):
        assert 0.0 <= scores[m] <= 1.0


def test_texture_model_scene_2d(tmp_path, one_thread):
    from cellinr.model.registry import bundled_texture_models
    from cellinr.scenes.composer import SceneSpec
    from cellinr.scenes.export import write_scene

    if "dsb2018" not in bundled_texture_models():
        pytest.skip("the bundled texture model is not installed")
    spec = SceneSpec(models=["deforming"], dims=(1, 64, 64), frames=2, cells=3, voxel_size=2.0, seed=2)
    path, _ = write_scene(spec, tmp_path / "tex", texture="dsb2018", device="cpu")
    seq = read_ctc_sequence(path / "ctc", 1)
    assert check_ctc_sequence(seq) == []
    inside = seq.images[seq.seg > 0].astype(float).mean()
    outside = seq.images[seq.seg == 0].astype(float).mean()
    assert inside > outside  # the texture model draws the cells brighter than the background
    assert json.loads((path / "scene.json").read_text())["texture"].endswith("texture_dsb2018")


def test_cells_move_as_their_model_learned(tmp_path):
    """--motion model: a model whose training cells all moved 2 um per frame along X moves every cell
    by 2 um per (training) frame along its own rotated X axis; a model without paths is one clear error."""
    import shutil

    import torch

    from cellinr.generation.trajectories import rotate_path
    from cellinr.model.registry import resolve_run
    from cellinr.scenes.composer import Scene, SceneSpec

    run = tmp_path / "run"
    shutil.copytree(resolve_run("deforming"), run)
    manifest = json.loads((run / "manifest.json").read_text())
    frames = int(max(json.loads((run / "run.json").read_text())["frames"]))
    path = [[0.0, 0.0, 2.0 * t] for t in range(frames)]
    manifest["sequences"] = [{**entry, "trajectory_um": path} for entry in manifest.get("sequences", [])]
    manifest["options"] = {**manifest.get("options", {}), "center": "frame"}  # shapes apart from their motion
    (run / "manifest.json").write_text(json.dumps(manifest))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = SceneSpec(models=[str(run)], dims=(1, 256, 256), frames=3, cells=2, voxel_size=2.0, seed=1,
                         motion={"source": "model"}, cycle_frames=frames)  # one training frame per scene frame
        scene = Scene(spec)
        before, checked = None, 0
        for frame in scene.frames():
            now = [None if c.body is None else c.body.pos.copy() for c in scene.cells]
            if before is not None:
                for c, b in zip(scene.cells, before):
                    expected = rotate_path(np.array([[0.0, 0.0, 2.0]]), c.rotation, None)[0] / 2.0
                    expected[0] = 0.0  # a 2D scene moves in Y and X
                    np.testing.assert_allclose(c.last_pos - b, expected, atol=1e-9)
                    checked += 1
            before = now
        assert len(scene.cells) >= 2 and checked == 2 * len(scene.cells)  # every cell, two steps
        still = tmp_path / "still"
        shutil.copytree(run, still)
        manifest["sequences"] = [{k: v for k, v in e.items() if k != "trajectory_um"} for e in manifest["sequences"]]
        (still / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ParameterError, match="records no cell trajectories"):
            Scene(SceneSpec(models=[str(still)], dims=(1, 64, 64), frames=2, cells=1, voxel_size=2.0,
                            motion={"source": "model"}))
    finally:
        torch.set_num_threads(n)


# -- crowding, clearance and brightness -------------------------------------------------------------------
def test_neighbour_gaps_on_known_layout():
    from cellinr.scenes.quality import neighbour_gaps

    lab = np.zeros((40, 60), np.int32)
    lab[10:20, 5:15] = 1
    lab[10:20, 20:30] = 2  # 5 px of background from cell 1
    lab[10:20, 30:40] = 3  # touches cell 2
    np.testing.assert_allclose(np.sort(neighbour_gaps(lab)), [0, 0, 5])
    lone = np.zeros((20, 20), np.int32)
    lone[5:10, 5:10] = 1
    assert neighbour_gaps(lone).size == 0
    vol = np.zeros((12, 30, 30), np.int32)
    vol[2:8, 5:12, 5:12] = 1
    vol[2:8, 5:12, 15:22] = 2
    np.testing.assert_allclose(neighbour_gaps(vol), [3, 3])


def test_clearance_claims_a_ring_around_the_mask():
    field = Field((1, 40, 40), margin=10)
    mask, off = crop_mask(_ball((1, 9, 9), (0, 4, 4), 4))
    half = np.array([0, 4, 4])
    a = Body(mask, off, half, np.array([0.0, 30.0, 20.0]), clearance=2)
    near = Body(mask, off, half, np.array([0.0, 30.0, 32.0]), clearance=2)  # 3 px of background apart
    far = Body(mask, off, half, np.array([0.0, 30.0, 34.0]), clearance=2)  # 5 px apart
    occ = Occupancy(field)
    assert occ.conflicts([a, near]) != {}
    assert occ.conflicts([a, far]) == {}
    plain = Body(mask, off, half, np.array([0.0, 30.0, 32.0]))
    assert occ.conflicts([Body(mask, off, half, np.array([0.0, 30.0, 20.0])), plain]) == {}


def test_scene_keeps_its_clearance_in_every_frame(one_thread):
    from cellinr.scenes.composer import Scene, SceneSpec
    from cellinr.scenes.quality import neighbour_gaps

    spec = SceneSpec(models=["deforming"], dims=(1, 96, 96), frames=4, cells=6, voxel_size=2.0, seed=2,
                     clearance=6)
    smallest = []
    for f in Scene(spec).frames():
        # one label per cell (a cell's own pieces may lie closer together)
        owner = np.zeros(f.labels.shape, np.int32)
        for index, corner, mask in f.cells:
            lo, hi = np.maximum(corner, 0), np.minimum(corner + mask.shape, f.labels.shape)
            if np.all(hi > lo):
                sub = mask[tuple(slice(lo[i] - corner[i], hi[i] - corner[i]) for i in range(3))]
                owner[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][sub] = index + 1
        gaps = neighbour_gaps(owner[0])
        smallest.append(gaps.min() if gaps.size else np.inf)
    assert min(smallest) >= 6 - 0.5, smallest  # the lattice allows half a voxel less
    with pytest.raises(ParameterError, match="--clearance"):
        SceneSpec(models=["deforming"], dims=(1, 96, 96), frames=4, cells=6, clearance=-1)


def test_brightness_draws_cover_the_distribution_evenly():
    from scipy.special import ndtr

    from cellinr.scenes.composer import brightness_draw

    z = np.array([brightness_draw(7, i) for i in range(60)])
    assert brightness_draw(7, 5) == z[5] and brightness_draw(8, 5) != z[5]
    u = np.sort(ndtr(z))
    # Kolmogorov-Smirnov distance to the uniform: about 0.11 for 60 independent draws, < 0.04 here
    ks = np.max(np.maximum(np.arange(1, 61) / 60 - u, u - np.arange(60) / 60))
    assert ks < 0.04, ks


def test_brightness_follows_size_classes_and_is_a_mean():
    from cellinr.scenes.export import peak_brightness
    from cellinr.scenes.quality import contrast_by_size
    from cellinr.texture.renderer import RenderParams, render

    # small cells bright, large cells dim
    rel = np.r_[np.full(40, 3.0), np.full(40, 1.0)]
    sizes = np.r_[np.full(40, 100.0), np.full(40, 400.0)]
    table = contrast_by_size(rel, sizes, classes=2, min_cells=30)
    assert table["sizes"] == [100.0, 400.0]
    params = RenderParams(foreground=10.0)
    b = peak_brightness(params, np.zeros(4), table, sizes=np.array([0, 100, 400, 200]))
    assert b[0] == 0 and b[1] == pytest.approx(30.0) and b[2] == pytest.approx(10.0)
    assert b[3] == pytest.approx(20.0)  # halfway in log size between the classes
    # rendered as means: a small and a large disc both have the asked mean over their interior
    lab = np.zeros((80, 80), np.int32)
    lab[_ball((80, 80), (20, 20), 5)] = 1
    lab[_ball((80, 80), (50, 50), 20)] = 2
    flat = RenderParams(background=0.0, background_variation=0.0, foreground=1.0, texture_contrast=0.0,
                        edge_dimming=0.8, psf_sigma=1.5, gain=0.0, read_noise=0.0, dtype="float32")
    from cellinr.geometry.regions import label_interiors

    inner = label_interiors(lab)
    for as_mean in (False, True):
        img = render(lab, flat, brightness=np.array([0.0, 100.0, 100.0]), brightness_is_mean=as_mean)
        means = [img[inner & (lab == k)].mean() for k in (1, 2)]
        if as_mean:
            np.testing.assert_allclose(means, [100.0, 100.0], rtol=0.01)
        else:  # as peaks, both lose to the dimmed edge and the blur
            assert max(means) < 90.0


def test_spacing_moves_close_neighbours_apart_and_leaves_far_ones():
    from cellinr.scenes.placement import spacing_steps

    field = Field((1, 60, 200), margin=10)
    mask, off = crop_mask(_ball((1, 11, 11), (0, 5, 5), 5))
    half = np.array([0, 5, 5])
    a = Body(mask, off, half, np.array([0.0, 30.0, 40.0]))
    b = Body(mask, off, half, np.array([0.0, 30.0, 53.0]))  # centres 13 apart: about 2 px of background
    far = Body(mask, off, half, np.array([0.0, 30.0, 150.0]))
    steps = spacing_steps(field, [a, b, None, far], spacing=8.0)
    r = np.sqrt(a.size / np.pi)
    short = 8.0 - (13.0 - 2 * r)
    # half the shortfall per frame, shared: a goes left, b goes right, along X only
    np.testing.assert_allclose(steps[0], [0, 0, -short / 4], atol=1e-9)
    np.testing.assert_allclose(steps[1], [0, 0, short / 4], atol=1e-9)
    assert not steps[2].any() and not steps[3].any()
    assert not spacing_steps(field, [a, b], spacing=0.0).any()
    # across the periodic seam the push follows the short way round
    c = Body(mask, off, half, np.array([0.0, 30.0, 2.0]))
    d = Body(mask, off, half, np.array([0.0, 30.0, 215.0]))  # 7 px the short way round (220 wide)
    s = spacing_steps(field, [c, d], spacing=8.0)
    assert s[0, 2] > 0 > s[1, 2]


def test_spacing_keeps_scene_cells_further_apart(one_thread):
    from cellinr.scenes.composer import Scene, SceneSpec
    from cellinr.scenes.quality import neighbour_gaps

    def last_gaps(spacing):
        spec = SceneSpec(models=["deforming"], dims=(1, 96, 96), frames=5, cells=8, voxel_size=2.0, seed=4,
                         motion={"drift": (0, 0, 0), "sigma": (0, 2.0, 2.0)}, spacing=spacing)
        *_, last = Scene(spec).frames()
        return neighbour_gaps(last.labels[0])

    # the closest neighbours are the ones it moves (the others follow their random walks)
    assert last_gaps(12.0).min() >= last_gaps(0.0).min() + 4
    with pytest.raises(ParameterError, match="--spacing"):
        SceneSpec(models=["deforming"], dims=(1, 96, 96), frames=4, cells=6, spacing=-2)


def test_cells_can_start_undivided(one_thread):
    from cellinr.scenes.composer import Scene, SceneSpec

    def first_frame(start_undivided):
        spec = SceneSpec(models=["dividing"], dims=(1, 128, 128), frames=1, cells=10, voxel_size=2.0, seed=0,
                         start_undivided=start_undivided)
        scene = Scene(spec)
        return scene, next(iter(scene.frames()))

    scene, _ = first_frame(False)
    assert any(c.shape.n > 1 for c in scene.cells), "the model shows no divided phase to test with"
    scene, frame = first_frame(True)
    assert all(c.shape.n == 1 for c in scene.cells)


def _dividing_timeline(first: int, pinch: int = 0) -> dict:
    """A probe timeline: one component until probe time ``first``, then two; pinched just before."""
    n = len(PROBE_TIMES)
    return {"counts": [1] * first + [2] * (n - first),
            "pinched": [first - pinch <= i < first for i in range(n)]}


@pytest.mark.parametrize("start_undivided", [False, True])
def test_simulated_divisions_match_the_expected_rate(start_undivided):
    from cellinr.scenes.calibration import simulated_divisions

    first, frames, cycle = 10, 12, 60
    span = len(PROBE_TIMES) - 1
    tau = -1.0 + (first - 0.5) * 2.0 / span  # the nearest probe time is the divided one from here on
    dt = 2.0 / (cycle - 1)
    t_hi = 1.0 - dt * (frames - 1)
    # the expectation over uniform starts, on a fine grid of starts (the divided ones redrawn)
    t0 = np.linspace(-1.0, min(tau, t_hi) if start_undivided else t_hi, 200_001)[:-1]
    times = t0[:, None] + dt * np.arange(frames)
    expected = np.mean((t0 < tau) & (times[:, -1] >= tau)) / np.mean((1 + (times >= tau)).sum(axis=1))
    d, c = simulated_divisions([_dividing_timeline(first)], cycle, frames, start_undivided=start_undivided,
                               cells=40_000)
    assert d / c == pytest.approx(expected, rel=0.05)


def test_spec_from_calibration_sets_spacing_and_the_cycle_of_the_real_rate():
    from cellinr.scenes.calibration import Calibration, simulated_divisions, spec_from_calibration
    from cellinr.texture.renderer import RenderParams

    timelines = [_dividing_timeline(f, pinch=2) for f in (5, 8, 11, 14)]
    quality = {"density": 0.2, "cell_size": 400.0, "neighbour_gap": 9.0, "mitosis_rate": 0.006,
               "non_convex": 0.02, "drift": [0.0, 0.1, 0.2], "step_sigma": [0.0, 1.0, 1.0]}
    cal = Calibration("real", quality, RenderParams(), (1, 128, 128), 20)
    model = {"name": "m", "divisions": 1.0, "undivided_fraction": 0.6, "pinched_share": 0.15, "non_convex": 0.1,
             "timelines": timelines}
    probe = {"size_um": 300.0, "divisions": 1.0, "undivided_fraction": 0.6, "models": [model]}
    none = dict.fromkeys(("dims", "frames", "voxel_size", "cells", "density", "motion", "cycle_frames", "clearance",
                          "start_undivided", "pinch_speed", "spacing"))
    out = spec_from_calibration(cal, probe, none)
    assert out["spacing"] == 9.0 and out["start_undivided"] and out["pinch_speed"] > 1
    d, c = simulated_divisions(timelines, out["cycle_frames"], 20, speed=out["pinch_speed"], start_undivided=True)
    assert d / c == pytest.approx(0.006, rel=0.05)
    given = spec_from_calibration(cal, probe, {**none, "spacing": 0.0, "cycle_frames": 77})
    assert given["spacing"] == 0.0 and given["cycle_frames"] == 77


def test_cycle_for_rate_hits_the_rate_and_a_faster_pinch_lengthens_it():
    from cellinr.scenes.calibration import cycle_for_rate, simulated_divisions

    timelines = [_dividing_timeline(f, pinch=3) for f in (6, 9, 12, 15)] + [
        {"counts": [1] * len(PROBE_TIMES), "pinched": [False] * len(PROBE_TIMES)}]  # one never divides
    frames, rate = 20, 0.004

    def cycle(speed, r=rate):
        return cycle_for_rate(r, [{"timelines": timelines, "speed": speed}], frames, start_undivided=True)

    slow, fast = cycle(1.0), cycle(5.0)
    for speed, c in ((1.0, slow), (5.0, fast)):
        d, n = simulated_divisions(timelines, c, frames, speed=speed, start_undivided=True)
        assert d / n == pytest.approx(rate, rel=0.05)
    assert fast > slow  # fewer starts in a pinch, divisions come sooner: a longer cycle for the same rate
    assert cycle(1.0, 2 * rate) < slow  # more divisions: a shorter cycle


@pytest.mark.parametrize("dims", [(1, 96, 96), (8, 64, 64)])
def test_refine_background_gives_the_real_het_background_on_the_first_frame(dims, one_thread):
    from cellinr.scenes.calibration import refine_background
    from cellinr.scenes.composer import Scene, SceneSpec
    from cellinr.scenes.export import background_field, render_frame
    from cellinr.scenes.quality import het_background_of
    from cellinr.texture.renderer import RenderParams

    spec = SceneSpec(models=["deforming"], dims=dims, frames=2, cells=4, voxel_size=2.0, seed=3)
    params = RenderParams(background=100.0, foreground=200.0, background_variation=0.05, background_scale=16.0,
                          psf_sigma=1.5, read_noise=4.0)
    frame = next(iter(Scene(spec).frames()))
    two_d = dims[0] == 1

    def measured(p):
        image = render_frame(frame.labels, frame.brightness, p, None, np.random.default_rng([spec.seed, 3, 0]),
                             background_field(p, dims[1:], spec.seed))
        return het_background_of(image[0] if two_d else image, frame.labels[0] if two_d else frame.labels)

    before = measured(params)
    for target in (0.5 * before, 2.0 * before):
        tuned = refine_background(params, spec, {"het_background": target})
        assert tuned.background_variation != params.background_variation
        assert measured(tuned) == pytest.approx(target, rel=0.1)
    # a target below what the cells and noise alone give: no field at all
    assert refine_background(params, spec, {"het_background": 1e-6}).background_variation == 0.0


def test_voxel_solidity_of_known_shapes():
    from skimage.measure import regionprops

    from cellinr.geometry.regions import voxel_solidity

    ball = _ball((41, 41, 41), (20, 20, 20), 15)
    dumbbell = _ball((41, 41, 41), (20, 20, 12), 9) | _ball((41, 41, 41), (20, 20, 28), 9)
    assert voxel_solidity(ball) > 0.93
    assert voxel_solidity(dumbbell) < 0.85
    for m in (ball, dumbbell, ball[20], dumbbell[20]):
        assert voxel_solidity(m) == pytest.approx(regionprops(m.astype(np.uint8))[0].solidity)
    assert voxel_solidity(dumbbell[20][None]) == pytest.approx(voxel_solidity(dumbbell[20]))  # singleton axis
    assert voxel_solidity(np.zeros((5, 5), bool)) == 1.0 and voxel_solidity(np.eye(5, dtype=bool)[:1]) == 1.0


def test_non_convex_share_counts_pinched_cells(tmp_path):
    from cellinr.scenes.quality import dataset_quality

    shape = (64, 64)
    labels = np.zeros((3,) + shape, np.uint16)
    for t in range(3):
        labels[t][_ball(shape, (16, 16), 8)] = 1  # convex
        labels[t][_ball(shape, (44, 38), 6) | _ball(shape, (44, 49), 6)] = 2  # two overlapping discs: a dumbbell
    images = (100 + 100 * (labels > 0)).astype(np.uint16)
    root = tmp_path / "toy"
    write_ctc_sequence(root, 1, images, labels)
    assert dataset_quality(root)["non_convex"] == pytest.approx(0.5)


def test_pinch_speed_gives_the_share_it_was_solved_for():
    from cellinr.scenes.calibration import MAX_PINCH_SPEED, pinch_speed_for

    model = {"divisions": 1.0, "pinched_share": 0.25, "non_convex": 0.2}
    k = pinch_speed_for(0.05, model)
    p = model["pinched_share"]
    shared = (p / k) / (1 - p + p / k)
    assert model["non_convex"] * shared / p == pytest.approx(0.05)
    assert pinch_speed_for(0.3, model) == 1.0  # already no more convex than the real cells
    assert pinch_speed_for(0.0, model) == MAX_PINCH_SPEED
    assert pinch_speed_for(0.05, {**model, "divisions": 0.0}) == 1.0  # a model that does not divide


def test_pinch_speed_shortens_the_pinched_phase(one_thread):
    from cellinr.scenes.composer import Scene, SceneSpec
    from cellinr.scenes.quality import NON_CONVEX, solidities

    def pinched_share(speed):
        spec = SceneSpec(models=["dividing"], dims=(1, 192, 192), frames=8, cells=16, voxel_size=2.0, seed=2,
                         start_undivided=True, cycle_frames=30, pinch_speed=speed)
        scene = Scene(spec)
        values = [v for frame in scene.frames() for v in solidities(frame.labels[0])]
        if speed > 1:  # no cell is left to end its sequence in a pinch
            assert not any(scene._shape(c, 1.0).pinched() for c in scene.cells)
        return float(np.mean(np.asarray(values) < NON_CONVEX)), len(values)

    slow, n_slow = pinched_share(1.0)
    fast, n_fast = pinched_share(10.0)
    assert slow > 0.05, f"the model shows too few pinched cells to test with ({slow:.3f} of {n_slow})"
    assert fast < 0.5 * slow, (slow, fast)
    with pytest.raises(ParameterError, match="--pinch-speed"):
        SceneSpec(models=["dividing"], dims=(1, 96, 96), frames=4, cells=6, pinch_speed=0.5)
    with pytest.raises(ParameterError, match="--pinch-speed"):
        SceneSpec(models=["dividing"], dims=(1, 96, 96), frames=4, cells=6, pinch_speed=[2.0, 3.0])
