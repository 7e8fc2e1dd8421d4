"""generate / reconstruct / interpolate / fit on a tiny model trained in the test, and their checks.

The model (the ``tiny`` preset) is fitted for a few seconds to three analytic ellipsoids whose radii
grow with time, so its fields are smooth, closed and anisotropic (rotations are visible).
"""

import json
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from cellinr.cli import main
from cellinr.errors import OutputExistsError, ParameterError, RunError
from cellinr.generation.frontends import generate, interpolate, reconstruct
from cellinr.generation.samplers import fit_gaussian, sample_latents
from cellinr.geometry.bands import evaluate_fast
from cellinr.geometry.grid import evaluate_dense, grid_points
from cellinr.io.sdf_dataset import SDFDataset
from cellinr.io.tiff import read_tiff
from cellinr.model.registry import resolve_run
from cellinr.model.run import load_run, write_run_files
from cellinr.nn.rotation import euler_xyz_to_matrix, random_rotations, rotation_angle
from cellinr.training.fitting import fit

SIZE, CLAMP, VOXEL_UM = 33, 8.0, 0.5
UNIT = CLAMP * 2 / (SIZE - 1)  # 0.5 coordinate units per SDF unit
RADII = torch.tensor([[0.55, 0.35, 0.25], [0.4, 0.4, 0.3], [0.3, 0.5, 0.45]])


def _target(p):
    """Approximate SDF (run units) of the three ellipsoids at points p (3, n, 4)."""
    r = RADII[:, None, :] * (1 + 0.15 * p[..., 3:4])
    n = (p[..., :3] / r).norm(dim=-1)
    return ((n - 1) * r.min(dim=-1).values).div(UNIT).clamp(-1, 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny network is overhead-bound: extra threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    from cellinr.model.config import preset
    from cellinr.nn.decoder import AutoDecoder

    torch.manual_seed(0)
    config = preset("tiny")
    decoder = AutoDecoder.from_config(config.model)
    codes = torch.randn(3, config.model.latent_dim, generator=torch.Generator().manual_seed(1)) * 0.5
    optim = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(2)
    for _ in range(250):
        p = torch.rand(3, 1024, 4, generator=gen) * 2 - 1
        loss = (decoder.forward_frames(codes, p) - _target(p)).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.05
    folder = tmp_path_factory.mktemp("run")
    manifest = {"format": "cellinr-sdf-dataset", "size": SIZE, "clamp": CLAMP, "voxel_size_um": VOXEL_UM,
                "scale_um_per_unit": CLAMP * VOXEL_UM, "sequences": []}
    write_run_files(folder, config=config, decoder=decoder, latents=codes, rotations=torch.eye(3).expand(3, 3, 3),
                    names=["seq_a", "seq_b", "seq_c"], frames=[3, 3, 2], manifest=manifest)
    return folder


def _near_surface(mask, voxels=1):
    return ndimage.binary_dilation(mask, iterations=voxels) & ~ndimage.binary_erosion(mask, iterations=voxels,
                                                                                      border_value=0)


def _read_mask(path):
    """A mask TIFF as (T, Z, Y, X); readers drop a T axis of length 1."""
    img = read_tiff(path)
    return img.data if img.axes == "TZYX" else img.data[None]


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_fast_matches_dense_on_trained_model(tiny_run):
    run = load_run(tiny_run)
    dims = (48, 44, 40)
    for i in range(3):
        field = run.field(i)
        for t in (-1.0, 0.3, 1.0):
            dense = evaluate_dense(field, dims, t=t)
            fast = evaluate_fast(field, dims, sdf_unit_in_coords=UNIT, t=t)
            a, b = dense.sdf <= 0, fast.sdf <= 0
            assert 0.005 < a.mean() < 0.6  # a real shape inside the grid
            differ = a != b
            assert differ.mean() <= 1e-3
            assert not (differ & ~_near_surface(a)).any()
            assert fast.queries < dense.queries / 2


def test_reduced_precision_path(tiny_run):
    run = load_run(tiny_run)
    full = evaluate_dense(run.field(0), (32, 32, 32)).sdf
    half = evaluate_dense(run.field(0), (32, 32, 32), precision="bf16").sdf
    assert half.dtype == np.float32
    assert 0 < np.abs(half - full).max() < 0.1  # bf16 rounding, not a different field
    fast = evaluate_fast(run.field(0), (32, 32, 32), sdf_unit_in_coords=UNIT, precision="bf16").sdf
    assert _dice(full <= 0, fast <= 0) > 0.95
    with pytest.raises(ValueError, match="precision"):
        evaluate_dense(run.field(0), (4, 4, 4), precision="fp8")


def test_random_rotations_are_haar_uniform():
    rots = random_rotations(20000, torch.Generator().manual_seed(0)).double()
    assert torch.allclose(rots @ rots.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(20000, 3, 3),
                          atol=1e-6)
    assert torch.allclose(torch.linalg.det(rots), torch.ones(20000, dtype=torch.float64), atol=1e-6)
    theta = rotation_angle(rots).numpy()
    cdf = lambda x: (x - np.sin(x)) / np.pi  # noqa: E731  angle density (1 - cos x) / pi on [0, pi]
    assert stats.kstest(theta, cdf).pvalue > 0.01
    # the rotated first axis is uniform on the sphere: each coordinate of it is U(-1, 1)
    assert stats.kstest(rots[:, 2, 0].numpy(), stats.uniform(-1, 2).cdf).pvalue > 0.01
    # the test has power: uniform Euler angles (the reference's sampler) are not Haar-uniform
    euler = (torch.rand(20000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1) * np.pi
    assert stats.kstest(rotation_angle(euler_xyz_to_matrix(euler)).numpy(), cdf).pvalue < 1e-6


def test_latent_samplers():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((5, 16)) * 0.2 + 1.0
    z, info = sample_latents("gaussian", 4000, codes=codes, sigma=0.3, rng=rng)
    assert z.shape == (4000, 16) and z.dtype == np.float32
    assert abs(z.std() - 0.3) < 0.01 and abs(z.mean()) < 0.01
    z, info = sample_latents("perturb", 50, codes=codes, sigma=1e-3, rng=rng)
    src = np.array([i["source_index"] for i in info])
    np.testing.assert_allclose(z, codes[src], atol=6e-3)
    z, info = sample_latents("fitted", 4000, codes=codes, rng=rng)
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.03)
    assert 0 < info[0]["shrinkage"] <= 1  # 5 codes in 16-d: strongly shrunk towards a sphere
    with pytest.raises(ParameterError, match="sigma"):
        sample_latents("gaussian", 1, codes=codes, sigma=0.0, rng=rng)
    with pytest.raises(ParameterError, match="at least 2"):
        sample_latents("fitted", 1, codes=codes[:1], rng=rng)
    with pytest.raises(ParameterError, match="unknown sampler"):
        sample_latents("uniform", 1, codes=codes, rng=rng)


def test_ledoit_wolf_shrinkage():
    rng = np.random.default_rng(1)
    true = np.diag(np.linspace(0.5, 2.0, 8))
    many = rng.multivariate_normal(np.zeros(8), true, size=20000)
    _, cov, a = fit_gaussian(many)
    assert a < 0.01 and np.abs(cov - true).max() < 0.1
    few = rng.multivariate_normal(np.zeros(8), true, size=4)
    _, cov, a = fit_gaussian(few)
    assert a > 0.2 and np.linalg.eigvalsh(cov).min() > 0  # singular sample covariance made definite


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_outputs_and_same_seed_identical_files(tiny_run, tmp_path):
    kw = dict(n=2, size=25, frames=4, seed=7, formats="tiff,sdf,mesh,mip", device="cpu", latent="perturb", sigma=0.02)
    records = generate(tiny_run, tmp_path / "a", **kw)
    generate(tiny_run, tmp_path / "b", **kw)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    assert "cell_0001.tif" in a and "cell_0000.h5" in a and "cell_0000_mip.tif" in a
    assert "meshes/cell_0000/t0003.ply" in a and "manifest.json" in a
    img = read_tiff(tmp_path / "a/cell_0000.tif")
    assert img.axes == "TZYX" and img.data.shape == (4, 25, 25, 25) and img.data.dtype == np.uint8
    spacing = VOXEL_UM * (SIZE - 1) / 24
    np.testing.assert_allclose(img.spacing, (spacing,) * 3, rtol=1e-5)
    mip = read_tiff(tmp_path / "a/cell_0000_mip.tif")
    np.testing.assert_array_equal(mip.data, img.data.max(axis=1))
    from cellinr.io.meshes import read_mesh

    mesh = read_mesh(tmp_path / "a/meshes/cell_0000/t0003.ply")  # x, y, z in microns
    assert mesh.faces.shape[0] > 100 and mesh.volume() > 0
    assert mesh.vertices_xyz.min() >= -spacing and mesh.vertices_xyz.max() <= 25 * spacing
    assert mesh.volume() == pytest.approx(img.data[3].sum() * spacing**3, rel=0.25)
    ds = SDFDataset(tmp_path / "a")  # the SDF output is a prepared data set
    np.testing.assert_array_equal(ds.read_frame(0, 2) <= 0, img.data[2].astype(bool))
    rec = json.loads((tmp_path / "a/cell_0001.json").read_text())
    assert rec["seed"] == 7 and rec["model_hash"] == load_run(tiny_run).model_hash
    assert len(rec["latent"]) == 8 and np.asarray(rec["rotation"]).shape == (3, 3)
    assert rec["latent"] == records[1]["latent"]
    c = generate(tiny_run, tmp_path / "c", **{**kw, "seed": 8, "formats": "tiff"})
    assert c[0]["latent"] != records[0]["latent"]


def test_generate_resumes_after_interruption(tiny_run, tmp_path):
    out = tmp_path / "out"
    generate(tiny_run, out, n=3, size=20, frames=2, seed=3, device="cpu")
    first = _files(out)
    # simulate an interruption during sequence 1: its marker and mask are missing, a temp file is left
    (out / "cell_0001.json").unlink()
    (out / "cell_0001.tif").unlink()
    (out / ".tmp-cell_0001-xyz.tif").write_bytes(b"partial")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("cell_000[02].*")}
    generate(tiny_run, out, n=3, size=20, frames=2, seed=3, device="cpu")
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("cell_000[02].*")} == mtimes  # skipped
    again = _files(out)
    assert not list(out.glob(".tmp-*"))  # the interrupted run's partial file is cleaned up
    assert again["cell_0001.tif"] == first["cell_0001.tif"]
    assert again["cell_0001.json"] == first["cell_0001.json"]
    # more sequences extend the same job; other options need --overwrite
    generate(tiny_run, out, n=4, size=20, frames=2, seed=3, device="cpu")
    assert (out / "cell_0003.json").is_file()
    with pytest.raises(OutputExistsError, match="other options"):
        generate(tiny_run, out, n=3, size=20, frames=2, seed=4, device="cpu")
    # --overwrite replaces the job: no cell of the old one is left to mix with the new ones
    (out / "notes.txt").write_text("kept")
    generate(tiny_run, out, n=2, size=20, frames=2, seed=4, device="cpu", overwrite=True)
    assert sorted(p.name for p in out.glob("cell_*")) == ["cell_0000.json", "cell_0000.tif", "cell_0001.json",
                                                           "cell_0001.tif"]
    assert (out / "notes.txt").read_text() == "kept"


def test_rotated_generation_equals_rotated_canonical(tiny_run, tmp_path):
    size = 61
    kw = dict(n=3, size=size, frames=1, seed=11, device="cpu", method="dense", latent="perturb", sigma=0.01)
    rotated = generate(tiny_run, tmp_path / "rot", formats="tiff", **kw)
    generate(tiny_run, tmp_path / "canon", rotation="none", formats="sdf", **kw)
    ds = SDFDataset(tmp_path / "canon")
    centre = (size - 1) / 2
    for i, rec in enumerate(rotated):
        r = np.asarray(rec["rotation"])
        assert rotation_angle(torch.tensor(r)).item() > 0.3  # a real rotation
        canon = ds.read_frame(i, 0)
        # SDF_R(x) = SDF_canon(R x); in (z, y, x) index order the matrix is P R P (P reverses axes)
        m = r[::-1, ::-1]
        expected = ndimage.affine_transform(canon, m, offset=centre - m @ np.full(3, centre), order=1,
                                            mode="nearest") <= 0
        got = _read_mask(tmp_path / f"rot/cell_{i:04d}.tif")[0].astype(bool)
        assert expected.mean() > 0.02
        dice = _dice(got, expected)
        assert dice >= 0.99, dice


def test_reconstruct_names_frames_and_layouts(tiny_run, tmp_path):
    recs = reconstruct(tiny_run, tmp_path / "r", size=21, formats="tiff,sdf", reference_layout=True, device="cpu")
    assert [r["name"] for r in recs] == ["seq_a", "seq_b", "seq_c"]
    assert read_tiff(tmp_path / "r/seq_c.tif").data.shape == (2, 21, 21, 21)
    import h5py

    with h5py.File(tmp_path / "r/seq_a.h5") as f:
        vid = f["sdf_vid"][...]
    assert vid.shape == (21, 21, 21, 3)  # MATLAB order X, Y, Z, T
    mask = read_tiff(tmp_path / "r/seq_a.tif").data
    np.testing.assert_array_equal(vid.transpose(3, 2, 1, 0) <= 0, mask.astype(bool))
    # temporal interpolation and non-cubic grids, fast equals dense
    fast = reconstruct(tiny_run, tmp_path / "f", dims=(30, 24, 18), frames=7, sequences=["seq_b"], device="cpu")
    dense = reconstruct(tiny_run, tmp_path / "d", dims=(30, 24, 18), frames=7, sequences=[1], method="dense",
                        device="cpu")
    a = read_tiff(tmp_path / "f/seq_b.tif").data
    b = read_tiff(tmp_path / "d/seq_b.tif").data
    assert a.shape == (7, 30, 24, 18)
    assert (a != b).mean() <= 1e-3
    assert fast[0]["queries"] < dense[0]["queries"]
    # the reconstruction is the trained shape
    run = load_run(tiny_run)
    pts = torch.from_numpy(grid_points((30, 24, 18), t=1.0))
    truth = (_target(pts[None].expand(3, -1, -1))[1] <= 0).numpy().reshape(30, 24, 18)
    assert _dice(a[-1].astype(bool), truth) > 0.8
    assert run.frames == [3, 3, 2]


def test_interpolate_endpoints(tiny_run, tmp_path):
    recs = interpolate(tiny_run, tmp_path / "i", start="seq_a", end=2, steps=3, size=20, frames=1, device="cpu",
                       method="dense", path="linear")
    assert [r["name"] for r in recs] == ["step_000", "step_001", "step_002"]
    run = load_run(tiny_run)
    np.testing.assert_array_equal(recs[0]["latent"], run.latents[0].numpy())
    np.testing.assert_allclose(recs[1]["latent"], (run.latents[0] + run.latents[2]).numpy() / 2, atol=1e-6)
    end = evaluate_dense(run.decoder.field(run.latents[2]), (20, 20, 20), t=0.0).sdf <= 0
    np.testing.assert_array_equal(_read_mask(tmp_path / "i/step_002.tif")[0].astype(bool), end)


def test_fit_recovers_codes_of_unseen_sequences(tiny_run, tmp_path):
    # an "unseen" data set: the model's own shapes from perturbed codes, prepared at another size
    generate(tiny_run, tmp_path / "data", n=2, size=24, frames=2, seed=5, latent="perturb", sigma=0.05,
             rotation="none", formats="sdf", method="dense", device="cpu")
    results = fit(tiny_run, tmp_path / "data", tmp_path / "fit", steps=60, points=2048, lr=2e-2, device="cpu")
    assert [r["name"] for r in results] == ["cell_0000", "cell_0001"]
    assert min(r["dice"] for r in results) > 0.97
    saved = json.loads((tmp_path / "fit/fit.json").read_text())
    assert saved["mean_dice"] == pytest.approx(np.mean([r["dice"] for r in results]))
    assert np.load(tmp_path / "fit/codes.npy").shape == (2, 8)
    assert (tmp_path / "fit/dice.csv").read_text().startswith("name,dice\ncell_0000,")
    # the fitted shapes, written by the writers of reconstruct, on the data set's grid
    fitted = read_tiff(tmp_path / "fit/cell_0000.tif").data
    assert fitted.shape == (2, 24, 24, 24)
    record = json.loads((tmp_path / "fit/cell_0000.json").read_text())
    assert record["sampler"] == "fitted" and record["options"]["job"] == "fit"
    data = SDFDataset(tmp_path / "data")
    assert _dice(fitted.astype(bool), np.stack(list(data.iter_frames(0))) <= 0) == pytest.approx(
        np.mean(results[0]["dice_per_frame"]), abs=0.02)
    # a run-like record: reconstruct / generate / interpolate --from-fit use the fitted codes
    again = reconstruct(tiny_run, tmp_path / "refit", size=24, frames=2, device="cpu", from_fit=tmp_path / "fit")
    assert [r["name"] for r in again] == ["cell_0000", "cell_0001"] and again[0]["options"]["from_fit"]
    np.testing.assert_array_equal(read_tiff(tmp_path / "refit/cell_0000.tif").data, fitted)
    np.testing.assert_allclose(again[1]["latent"], np.load(tmp_path / "fit/codes.npy")[1], atol=1e-7)
    gen = generate(tiny_run, tmp_path / "gen", n=2, size=12, frames=1, latent="perturb", sigma=1e-6,
                   rotation="none", device="cpu", from_fit=tmp_path / "fit")
    assert {g["source_index"] for g in gen} <= {0, 1}
    src = gen[0]["source_index"]
    np.testing.assert_allclose(gen[0]["latent"], np.load(tmp_path / "fit/codes.npy")[src], atol=1e-4)
    assert main(["interpolate", str(tiny_run), "--from-fit", str(tmp_path / "fit"), "--from", "cell_0000", "--to",
                 "cell_0001", "--steps", "2", "--size", "12", "--frames", "1", "--out", str(tmp_path / "i"),
                 "--path", "linear", "--device", "cpu"]) == 0
    step1 = json.loads((tmp_path / "i/step_001.json").read_text())
    np.testing.assert_allclose(step1["latent"], np.load(tmp_path / "fit/codes.npy")[1], atol=1e-6)
    other = load_run(tiny_run)
    other.model_hash = "0" * 64
    with pytest.raises(RunError, match="fitted with another network"):
        generate(other, tmp_path / "gen2", n=1, size=12, device="cpu", from_fit=tmp_path / "fit")


def _one_sequence_dataset(folder, name, field):
    """A prepared data set of one 2-frame sequence on a 24^3 grid: ``field`` sampled densely (run units)."""
    from cellinr.geometry.grid import time_coords
    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence

    frames = [evaluate_dense(field, (24, 24, 24), t=t).sdf for t in time_coords(2)]
    folder.mkdir()
    write_sequence(folder / f"{name}.h5", frames, n_frames=2, shape=(24, 24, 24))
    write_manifest(folder, new_manifest(size=24, clamp=CLAMP * 23 / (SIZE - 1), sequences=[
        {"name": name, "file": f"{name}.h5", "frames": 2, "shape": [24, 24, 24]}]))


def test_fit_recovers_a_rotation(tiny_run, tmp_path):
    from scipy.spatial.transform import Rotation

    run = load_run(tiny_run)
    rot = Rotation.from_rotvec(0.35 * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)).as_matrix()
    field = run.decoder.field(run.latents[0], torch.tensor(rot, dtype=torch.float32))
    _one_sequence_dataset(tmp_path / "d", "rot", field)
    plain = fit(tiny_run, tmp_path / "d", tmp_path / "f0", steps=100, points=2048, lr=1e-2, device="cpu")
    turned = fit(tiny_run, tmp_path / "d", tmp_path / "f1", steps=100, points=2048, lr=1e-2, rotations=True,
                 rotation_lr=2e-2, device="cpu")
    got = np.load(tmp_path / "f1/rotations.npy")[0].astype(np.float64)
    assert np.linalg.norm(Rotation.from_matrix(got.T @ rot).as_rotvec()) < 0.05  # radians
    assert turned[0]["dice"] > 0.98 and turned[0]["dice"] > plain[0]["dice"] + 0.05


def test_fit_recovers_a_large_rotation_up_to_the_shapes_symmetry(tiny_run, tmp_path):
    """120 degrees about (1, 1, 1): the axis-aligned ellipsoid's nearest symmetric orientation is 120 degrees
    away from the identity, where a start at the identity stays; the principal-axes hypotheses find it."""
    from scipy.spatial.transform import Rotation

    run = load_run(tiny_run)
    rot = Rotation.from_rotvec(np.radians(120) * np.ones(3) / np.sqrt(3)).as_matrix()
    field = run.decoder.field(run.latents[0], torch.tensor(rot, dtype=torch.float32))
    _one_sequence_dataset(tmp_path / "d", "rot", field)
    turned = fit(tiny_run, tmp_path / "d", tmp_path / "f", rotations=True, device="cpu")
    got = np.load(tmp_path / "f/rotations.npy")[0].astype(np.float64)
    # f(z, S R p) = f(z, R p) for the half turns S about the ellipsoid's axes (and the identity)
    flips = [np.diag(d) for d in ([1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1])]
    error = min(np.linalg.norm(Rotation.from_matrix(got.T @ s @ rot).as_rotvec()) for s in flips)
    assert error < 0.05  # radians
    assert turned[0]["dice"] > 0.98


def test_fit_scales_a_cell_larger_than_every_training_cell(tiny_run, tmp_path):
    """Code 1's shape 1.5 times larger: 3.4 times the volume of the largest learned shape, out of the codes'
    reach; the fit brings it to their median size (about 1.5) and reconstruct --from-fit draws it there."""
    run = load_run(tiny_run)
    field = run.decoder.field(run.latents[1], None, 1.5)
    _one_sequence_dataset(tmp_path / "d", "big", field)
    plain = fit(tiny_run, tmp_path / "d", tmp_path / "f0", scale=False, device="cpu")
    scaled = fit(tiny_run, tmp_path / "d", tmp_path / "f1", device="cpu")
    assert "scale" not in plain[0] and scaled[0]["scale"] == pytest.approx(1.5, rel=0.1)
    assert np.load(tmp_path / "f1/scales.npy")[0] == pytest.approx(scaled[0]["scale"])
    assert scaled[0]["dice"] > 0.95 and scaled[0]["dice"] > plain[0]["dice"] + 0.03
    again = reconstruct(tiny_run, tmp_path / "re", size=24, frames=2, device="cpu", from_fit=tmp_path / "f1")
    assert again[0]["scale"] == pytest.approx(scaled[0]["scale"])
    np.testing.assert_array_equal(read_tiff(tmp_path / "re/big.tif").data, read_tiff(tmp_path / "f1/big.tif").data)
    # new cells drawn around the fitted one keep its size
    gen = generate(tiny_run, tmp_path / "gen", n=1, size=24, frames=2, latent="perturb", sigma=1e-6,
                   rotation="none", device="cpu", from_fit=tmp_path / "f1")
    assert gen[0]["scale"] == pytest.approx(scaled[0]["scale"])


def test_cli_reconstruct_interpolate_fit(tiny_run, tmp_path, capsys):
    assert main(["reconstruct", str(tiny_run), "--out", str(tmp_path / "r"), "--size", "16", "--frames", "2",
                 "--formats", "tiff,mesh", "--mesh-format", "stl", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "r/meshes").iterdir()) == ["seq_a", "seq_b", "seq_c"]
    assert (tmp_path / "r/meshes/seq_a/t0001.stl").is_file()
    assert main(["reconstruct", str(tiny_run), "--out", str(tmp_path / "r"), "--size", "16", "--frames", "2",
                 "--formats", "tiff,mesh", "--mesh-format", "stl", "--device", "cpu"]) == 0  # resumes: no-op
    assert main(["interpolate", str(tiny_run), "--from", "seq_a", "--to", "seq_b", "--steps", "2", "--out",
                 str(tmp_path / "i"), "--size", "12", "--device", "cpu"]) == 0
    assert (tmp_path / "i/step_001.tif").is_file()
    assert main(["interpolate", str(tiny_run), "--from", "nope", "--to", "seq_b", "--steps", "2", "--out",
                 str(tmp_path / "j"), "--device", "cpu"]) == 2
    assert "nope" in capsys.readouterr().err
    main(["reconstruct", str(tiny_run), "--out", str(tmp_path / "ds"), "--size", "16", "--formats", "sdf",
          "--method", "dense", "--device", "cpu"])
    assert main(["fit", str(tiny_run), str(tmp_path / "ds"), "--out", str(tmp_path / "fit"), "--steps", "10",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "seq_a" in out and "mean" in out and "Dice" in out


def test_bad_input_errors(tiny_run, tmp_path, capsys):
    with pytest.raises(RunError, match="no such run folder|not found"):
        generate(tmp_path / "nope", tmp_path / "o", n=1, device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(RunError, match="incomplete"):
        reconstruct(broken, tmp_path / "o", device="cpu")
    with pytest.raises(ParameterError, match="--size 0"):
        generate(tiny_run, tmp_path / "o", n=1, size=0, device="cpu")
    with pytest.raises(ParameterError, match="--frames 0"):
        generate(tiny_run, tmp_path / "o", n=1, frames=0, device="cpu")
    with pytest.raises(ParameterError, match=r"needs about [0-9.]+ GiB"):
        generate(tiny_run, tmp_path / "o", n=1, size=20000, device="cpu")
    with pytest.raises(ParameterError, match="unknown format gif"):
        generate(tiny_run, tmp_path / "o", n=1, formats="tiff,gif", device="cpu")
    with pytest.raises(ParameterError, match="--sigma"):
        generate(tiny_run, tmp_path / "o", n=1, sigma=-1.0, device="cpu")
    # a negative rate would make Adam ascend the loss without complaint
    with pytest.raises(ParameterError, match="--lr -1"):
        fit(tiny_run, tmp_path / "no-data", tmp_path / "f", lr=-1.0, device="cpu")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        fit(tiny_run, tmp_path / "no-data", tmp_path / "a-file", device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate(tiny_run, other, n=1, size=12, device="cpu")
    # the command line prints one line and exits 2
    assert main(["generate", str(tiny_run), "--out", str(other), "--n", "1", "--size", "12", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert main(["generate", str(tiny_run), "--out", str(other), "--n", "1", "--size", "12", "--device", "cpu",
                 "--overwrite", "--formats", "tiff,mip"]) == 0
    assert (other / "cell_0000_mip.tif").is_file()


@pytest.mark.slow
def test_reconstruct_a_run_trained_by_cellinr_train(tmp_path):
    """End to end with the real training loop (tiny preset): the run folder it writes is accepted."""
    from cellinr.geometry.grid import time_coords
    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence
    from cellinr.training.shape import train

    size, clamp = 16, 4.0
    seqs = []
    for i, radius in enumerate((0.4, 0.6)):
        frames = []
        for t in time_coords(2):
            p = grid_points((size, size, size), t)
            dist = (np.linalg.norm(p[:, :3], axis=1) - radius * (1 + 0.1 * t)) * (size - 1) / 2  # voxels
            frames.append(np.clip(dist / clamp, -1, 1).reshape(size, size, size).astype(np.float32))
        write_sequence(tmp_path / f"s{i}.h5", frames, n_frames=2, shape=(size, size, size))
        seqs.append({"name": f"s{i}", "file": f"s{i}.h5", "frames": 2, "shape": [size] * 3})
    write_manifest(tmp_path, new_manifest(size=size, clamp=clamp, voxel_size_um=1.0, scale_um_per_unit=clamp,
                                          sequences=seqs))
    run = train(tmp_path, tmp_path / "run", preset="tiny", progress=False)
    recs = reconstruct(run, tmp_path / "rec", size=20, frames=3, formats="tiff,mip", device="cpu")
    assert [r["name"] for r in recs] == ["s0", "s1"]
    assert _read_mask(tmp_path / "rec/s1.tif").shape == (3, 20, 20, 20)
    img = read_tiff(tmp_path / "rec/s1.tif")
    np.testing.assert_allclose(img.spacing, (15 / 19,) * 3, rtol=1e-5)


@pytest.mark.slow
def test_generate_killed_with_sigkill_resumes_to_identical_files(tiny_run, tmp_path):
    """A real interruption: the command is killed (SIGKILL) mid-job, then rerun to completion."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "cellinr", "generate", str(tiny_run), "--n", "6", "--size", "40", "--frames", "6",
            "--formats", "tiff,sdf,mesh", "--seed", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*argv, "--out", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed/cell_0001.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (tmp_path / "killed").glob("cell_*.json"))
    assert 1 <= len(done) < 6, f"not interrupted mid-job: {done}"
    subprocess.run([*argv, "--out", str(tmp_path / "killed")], env=env, check=True, capture_output=True)
    subprocess.run([*argv, "--out", str(tmp_path / "whole")], env=env, check=True, capture_output=True)
    killed, whole = _files(tmp_path / "killed"), _files(tmp_path / "whole")
    assert killed.keys() == whole.keys()  # no partial files left behind
    for name in whole:
        assert killed[name] == whole[name], name


def test_interpolation_midpoint_keeps_the_size_of_similar_cells(tmp_path):
    """Between two cells of similar volume (bundled ``deforming`` model, cells 1 and 3), the straight line's
    middle shrinks; the default path (the model's shape nearest to the blend of the two SDFs) does not."""
    from cellinr.generation.frames import decode

    run = load_run(resolve_run("deforming"))
    a, b = run.codes[1], run.codes[3]

    def volume(z):
        return int((decode(run, z, size=32, frames=1, method="dense", device="cpu") <= 0).sum())

    va, vb = volume(a), volume(b)
    assert abs(va - vb) < 0.15 * max(va, vb)  # similar cells
    recs = {path: interpolate(run, tmp_path / path, start=1, end=3, steps=3, size=32, frames=1, method="dense",
                              device="cpu", path=path) for path in ("linear", "manifold")}
    mid = {path: int(read_tiff(tmp_path / path / "step_001.tif").data.sum()) for path in recs}
    print(f"volumes (voxels): {va} -> linear {mid['linear']} / manifold {mid['manifold']} -> {vb}")
    # (with the previous bundled model the straight line's middle shrank to 881 of 1170 voxels; how much
    # it shrinks depends on the model, so only the manifold path's promise is asserted)
    assert mid["manifold"] >= 0.9 * min(va, vb)
    assert recs["manifold"][1]["path"] == "manifold"
    np.testing.assert_array_equal(recs["manifold"][0]["latent"], a)  # the ends are the cells themselves
def _cli_env(**extra):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **extra}


def test_two_process_sharded_generation_equals_one_process(tiny_run, tmp_path):
    """Two processes (one --shard 1/2, one torchrun-style RANK=0 WORLD_SIZE=2) write one folder together."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "cellinr", "generate", str(tiny_run), "--n", "5", "--size", "20", "--frames", "3",
            "--formats", "tiff,sdf,mip", "--seed", "4", "--device", "cpu"]
    one = subprocess.run([*argv, "--out", str(tmp_path / "one")], env=_cli_env(), capture_output=True, text=True,
                         check=False)
    assert one.returncode == 0, one.stderr
    shards = [subprocess.Popen([*argv, "--out", str(tmp_path / "two"), "--shard", "1/2"], env=_cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
              subprocess.Popen([*argv, "--out", str(tmp_path / "two")], env=_cli_env(RANK="0", WORLD_SIZE="2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    for proc in shards:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []
    marker = json.loads(a["cellinr-generate.json"])
    assert marker["complete"] and [s["name"] for s in marker["sequences"]] == [f"cell_{i:04d}" for i in range(5)]
    assert "manifest.json" in a


def test_shards_resume_refuse_other_options_and_bad_shards(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    kw = {"n": 3, "size": 16, "frames": 2, "seed": 1, "device": "cpu"}
    recs = generate(tiny_run, out, shard="1/2", **kw)
    assert [r["name"] for r in recs] == ["cell_0001"]
    assert sorted(p.name for p in out.glob("cell_*.json")) == ["cell_0001.json"]
    assert "complete" not in json.loads((out / "cellinr-generate.json").read_text())  # not all shards done
    before = _files(out)
    # a shard started with another seed or other options: one line, nothing written or overwritten
    for bad in ({**kw, "seed": 2}, {**kw, "frames": 3}):
        with pytest.raises(OutputExistsError, match="other options"):
            generate(tiny_run, out, shard="0/2", **bad)
    assert main(["generate", str(tiny_run), "--out", str(out), "--n", "3", "--size", "16", "--frames", "2",
                 "--seed", "9", "--shard", "0/2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other options" in err[0] and "seed" in err[0]
    assert _files(out) == before
    # the other shard completes the job and writes the manifest; a rerun of everything resumes (no-op)
    generate(tiny_run, out, shard="0/2", **kw)
    assert json.loads((out / "cellinr-generate.json").read_text())["complete"]
    whole = _files(out)
    assert len(generate(tiny_run, out, **kw)) == 3
    assert _files(out) == whole
    for bad, match in (("2/2", "K must be smaller than N"), ("1/0", "N must be at least 1"), ("x", "K/N")):
        with pytest.raises(ParameterError, match=match):
            generate(tiny_run, tmp_path / "o", shard=bad, **kw)
    assert main(["generate", str(tiny_run), "--out", str(tmp_path / "o"), "--n", "2", "--shard", "3/2",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shard 3/2" in err[0]
    with pytest.raises(ParameterError, match=r"needs about [0-9.]+ GiB of memory, more than the allowed 0.1 GiB"):
        generate(tiny_run, tmp_path / "o", n=1, size=1024, device="cpu", max_memory_gb=0.1)
    assert not (tmp_path / "o").exists()


def test_streamed_tiff_equals_whole_array_tiff(tiny_run, tmp_path):
    """The page-by-page TIFF writer gives the same bytes as writing the whole (T, Z, Y, X) mask at once."""
    from cellinr.generation.frames import decode
    from cellinr.io.tiff import write_tiff

    rec = generate(tiny_run, tmp_path / "g", n=1, size=19, frames=3, seed=2, formats="tiff,mip", device="cpu")[0]
    run = load_run(tiny_run)
    sdf = decode(run, rec["latent"], np.asarray(rec["rotation"]), size=19, frames=3, device="cpu")
    mask = (sdf <= 0).astype(np.uint8)
    spacing = tuple(rec["options"]["voxel_size_um"])
    write_tiff(tmp_path / "ref.tif", mask, axes="TZYX", spacing=spacing, frame_interval=rec["frame_interval_min"])
    assert (tmp_path / "g/cell_0000.tif").read_bytes() == (tmp_path / "ref.tif").read_bytes()
    write_tiff(tmp_path / "mip.tif", mask.max(axis=1), axes="TYX", spacing=spacing,
               frame_interval=rec["frame_interval_min"])
    assert (tmp_path / "g/cell_0000_mip.tif").read_bytes() == (tmp_path / "mip.tif").read_bytes()
    assert rec["voxel_fraction_inside"] == pytest.approx(mask.mean())


def test_methods_agree_and_cli_choices_match():
    from cellinr.cli.generate import METHODS as CLI_METHODS
    from cellinr.generation.frames import METHODS

    assert CLI_METHODS == METHODS


def test_memory_estimates_scale_with_the_surface_not_the_grid():
    from cellinr.generation.frames import EvalOptions
    from cellinr.generation.runner import memory_needed

    big = (1024, 1024, 1024)
    fast = memory_needed(big, 30, formats=("tiff",), opts=EvalOptions(), device="cpu")
    assert fast < 2 * 2**30  # not the 4 GiB of a float32 frame, and no (T, Z, Y, X) mask held
    assert memory_needed(big, 300, formats=("tiff",), opts=EvalOptions(), device="cpu") == fast  # streamed
    assert memory_needed(big, 30, formats=("tiff",), opts=EvalOptions(method="dense"), device="cpu") > 4 * 2**30
    assert memory_needed(big, 30, formats=("tiff", "mesh"), opts=EvalOptions(), device="cpu") > 16 * 2**30


def _with_paths(tiny_run, folder, paths):
    """A copy of the tiny run whose manifest records the cells' paths (microns, Z Y X), as prepare does."""
    import shutil

    shutil.copytree(tiny_run, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sequences"] = [{"name": name, "trajectory_um": path} for name, path in paths.items()]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _centroids(mask):
    return np.array([np.argwhere(frame).mean(axis=0) for frame in mask])


def test_reconstruct_puts_the_learned_paths_back(tiny_run, tmp_path):
    # seq_a moves 3 um (6 voxels) along X and 1.5 um along Y over its 3 frames; seq_b 4 um along Z
    paths = {"seq_a": [[0, 0, 0], [0, 0.75, 1.5], [0, 1.5, 3.0]], "seq_b": [[0, 0, 0], [2.0, 0, 0], [4.0, 0, 0]],
             "seq_c": [[0, 0, 0], [0, 0, -2.0]]}
    run = _with_paths(tiny_run, tmp_path / "run", paths)
    kw = {"size": SIZE, "method": "dense", "device": "cpu"}
    still = reconstruct(run, tmp_path / "still", **kw)
    moved = reconstruct(run, tmp_path / "moved", trajectory="learned", **kw)
    for rec_still, rec_moved in zip(still, moved):
        name = rec_still["sequence"]
        a = read_tiff(tmp_path / "still" / f"{name}.tif").data
        b = read_tiff(tmp_path / "moved" / f"{name}.tif").data
        path = np.asarray(paths[name], float)
        expected = (path - (path.min(axis=0) + path.max(axis=0)) / 2) / VOXEL_UM  # centred, in voxels
        np.testing.assert_allclose(_centroids(b) - _centroids(a), expected, atol=0.3)
        np.testing.assert_allclose(rec_moved["trajectory_um"], expected * VOXEL_UM, atol=1e-6)
        assert rec_still["trajectory_um"] is None
    assert json.loads((tmp_path / "moved" / "cellinr-reconstruct.json").read_text())["options"]["trajectory"] == "learned"
    # the fast evaluation follows the moving field exactly as dense evaluation does
    fast = reconstruct(run, tmp_path / "fast", trajectory="learned", size=SIZE, device="cpu")
    for rec in fast:
        name = rec["sequence"]
        np.testing.assert_array_equal(read_tiff(tmp_path / "fast" / f"{name}.tif").data,
                                      read_tiff(tmp_path / "moved" / f"{name}.tif").data)


def test_generate_trajectories_keep_the_codes_and_refuse_runs_without_paths(tiny_run, tmp_path, capsys):
    paths = {"seq_a": [[0, 0, 0], [0, 0, 1.0], [0, 0, 2.0]], "seq_b": [[0, 0, 0], [0, 1.0, 0], [0, 2.0, 0]],
             "seq_c": [[0, 0, 0], [1.0, 0, 0]]}
    run = _with_paths(tiny_run, tmp_path / "run", paths)
    kw = {"n": 4, "size": 17, "frames": 5, "seed": 3, "device": "cpu", "latent": "perturb"}
    none = generate(run, tmp_path / "none", **kw)
    for mode in ("learned", "sampled"):
        recs = generate(run, tmp_path / mode, trajectory=mode, **kw)
        again = generate(run, tmp_path / f"{mode}2", trajectory=mode, **kw)
        for a, b, c in zip(none, recs, again):
            assert a["latent"] == b["latent"] and a["rotation"] == b["rotation"]  # same cells, moved
            assert b["trajectory_um"] == c["trajectory_um"] and len(b["trajectory_um"]) == 5
            path = np.asarray(b["trajectory_um"])
            np.testing.assert_allclose(path.min(axis=0) + path.max(axis=0), 0, atol=1e-9)  # centred
            assert np.ptp(path, axis=0).max() > 0.5  # it moves (every training cell does, by 1-2 um)
        if mode == "learned":  # the path of the cell the code was drawn around, turned with the rotation
            for b in recs:
                src = paths[("seq_a", "seq_b", "seq_c")[b["trajectory_source_index"]]]
                assert b["trajectory_source_index"] == b["source_index"]
                length = np.linalg.norm(np.asarray(src[-1]) - src[0])
                assert np.linalg.norm(np.asarray(b["trajectory_um"][-1]) - b["trajectory_um"][0]) == \
                    pytest.approx(length, rel=1e-6)
    with pytest.raises(ParameterError, match="records no cell trajectories"):
        generate(tiny_run, tmp_path / "x", trajectory="sampled", **kw)
    assert main(["generate", str(tiny_run), "--out", str(tmp_path / "y"), "--n", "1", "--trajectory", "learned",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trajectory learned" in err[0]
    with pytest.raises(ParameterError, match="reconstruct puts back"):
        reconstruct(run, tmp_path / "z", trajectory="sampled")


def test_trajectories_refuse_runs_whose_cubes_kept_the_motion(tiny_run, tmp_path):
    run = _with_paths(tiny_run, tmp_path / "run", {"seq_a": [[0, 0, 0], [0, 0, 1.0], [0, 0, 2.0]]})
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["options"] = {"center": "sequence"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ParameterError, match="centred per sequence"):
        reconstruct(run, tmp_path / "r", trajectory="learned", device="cpu")
    assert not (tmp_path / "r").exists()
