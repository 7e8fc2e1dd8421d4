"""import-reference against the authors' conventions (MIAGroupUT/IMPLICIT-CELL-SURFACES, read as documented).

The decoder, the grid, the rotation and the file layouts below are written here from the authors'
documented architecture and procedure (DeepSDF layout with sine activations, ``lin0 ... linK``,
``latent_in`` / ``xyz_in_all`` concatenations, omega 30, linear output; ``np.mgrid`` grid over
ReconstructionDims with column k = array axis k; ``xyz @ euler_angles_to_matrix(a, "XYZ")``; output
(F, N0, N1, N2); ``sdf_vid`` written through ``np.transpose(out, (3, 2, 1, 0))``), not copied.
"""

import json
import logging
import math

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from torch import nn

from cellinr.cli import main
from cellinr.errors import OutputExistsError, RunError
from cellinr.io.sources import open_source
from cellinr.model.reference import import_reference
from cellinr.model.run import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

# the published architecture (MedIA 2024): 192-d codes, 10 hidden layers, latent_in (4, 7), xyz_in_all
L = 192
DIMS = [128, 128, 128, 320, 128, 128, 320, 128, 128, 128]
LATENT_IN = [4, 7]
GRID = [6, 7, 5]  # ReconstructionDims (N0, N1, N2): not a cube, so a transposition cannot pass
FRAMES = 3


def euler_xyz(a: np.ndarray) -> np.ndarray:
    """PyTorch3D euler_angles_to_matrix(a, "XYZ") = Rx(a0) @ Ry(a1) @ Rz(a2), written out."""
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


class AuthorsDecoder(nn.Module):
    """The authors' DeepSDF-with-sine decoder as documented: input [z, x, y, z, t]; before layer k in
    latent_in the whole input is appended, before every other layer k > 0 the coordinates (x, y, z, t);
    widths shrink so each concatenated input has the nominal width; sin(30 x) on hidden layers."""

    def __init__(self, latent=L, dims=DIMS, latent_in=LATENT_IN, rng=None, output_bound=0.3):
        super().__init__()
        self.dims = [latent + 4, *dims, 1]
        self.latent_in = latent_in
        self.n = len(self.dims)
        for k in range(self.n - 1):
            if k + 1 in latent_in:
                out = self.dims[k + 1] - self.dims[0]
            elif k != self.n - 2:
                out = self.dims[k + 1] - 4
            else:
                out = self.dims[k + 1]
            setattr(self, f"lin{k}", nn.Linear(self.dims[k], out))
        with torch.no_grad():  # SIREN initialisation; a larger output layer for a field of visible size
            for k in range(self.n - 1):
                lin = getattr(self, f"lin{k}")
                fan_in = lin.in_features
                bound = 1 / fan_in if k == 0 else math.sqrt(6 / fan_in) / 30
                if k == self.n - 2 and output_bound is not None:
                    bound = output_bound
                lin.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, lin.weight.shape)))
                lin.bias.copy_(torch.from_numpy(rng.uniform(-0.1, 0.1, lin.bias.shape)))

    def forward(self, latent, xyzt):
        inp = torch.cat([latent, xyzt], 1)
        x = inp
        for k in range(self.n - 1):
            if k in self.latent_in:
                x = torch.cat([x, inp], 1)
            elif k != 0:
                x = torch.cat([x, xyzt], 1)
            x = getattr(self, f"lin{k}")(x)
            if k < self.n - 2:
                x = torch.sin(30 * x)
        return x


def authors_reconstruction(decoder, latent, angles, dims, frames, *, transpose_rotation=False) -> np.ndarray:
    """The authors' reconstruction of one sequence: (F, N0, N1, N2) float32."""
    pc = np.stack(np.mgrid[: dims[0], : dims[1], : dims[2]], axis=-1).astype(np.float32)
    pc[..., 0] /= max(dims[0] - 1, 1)
    pc[..., 1] /= dims[1] - 1
    pc[..., 2] /= dims[2] - 1
    pc = (pc - 0.5) * 2.0
    pc = pc.reshape(-1, 3)
    e = euler_xyz(angles).astype(np.float32)
    pc = pc @ (e.T if transpose_rotation else e)
    t = np.arange(frames, dtype=np.float32)
    t = (t - t.min()) / (t.max() - t.min()) * 2 - 1
    out = np.zeros((frames, *dims), np.float32)
    z = torch.from_numpy(latent.astype(np.float32))[None]
    with torch.no_grad():
        for i in range(frames):
            xyzt = torch.from_numpy(np.concatenate([pc, np.full((len(pc), 1), t[i], np.float32)], 1))
            out[i] = decoder(z.expand(len(pc), -1), xyzt)[:, 0].numpy().reshape(dims)
    return out


def write_authors_sdf_vid(path, sdf: np.ndarray) -> None:
    """An sdf_vid file as the authors' test.py writes it (UseHDF5): (F, N0, N1, N2) transposed (3, 2, 1, 0)."""
    data = np.transpose(sdf, (3, 2, 1, 0))
    with h5py.File(path, "w") as f:
        f.create_dataset("sdf_vid", data=data, chunks=(*data.shape[:3], 1), compression="gzip",
                         compression_opts=4, fillvalue=0)


SPECS = {
    "Description": ["This experiment learns an implict shape representation for cells"],
    "DataSource": "./data/cele",
    "NetworkSpecs": {"dims": DIMS, "dropout": [], "dropout_prob": 0.2, "norm_layers": [], "latent_in": LATENT_IN,
                     "xyz_in_all": True, "use_tanh": False, "latent_dropout": False, "weight_norm": False,
                     "positional_encoding": False, "fourier_degree": 5},
    "CodeLength": L, "NumEpochs": 15000, "SampleFraction": 0.06, "NumSequences": 2, "ClampSDFminmax": False,
    "ClampingDistance": 0.1, "ScenesPerBatch": 1, "DataLoaderThreads": 4, "CodeRegularization": True,
    "CodeRegularizationLambda": 1e-4, "ReconstructionDims": GRID, "ReconstructionSubsetSize": 16777216,
    "ReconstructionFramesPerSequence": FRAMES, "LogFrequency": 20,
}


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    decoder = AuthorsDecoder(rng=rng).eval()
    latents = rng.normal(0, 1 / math.sqrt(L), (2, L)).astype(np.float32)
    angles = rng.uniform(-math.pi, math.pi, (2, 3)).astype(np.float32)
    # shift the output so that the zero level set crosses the grid (masks with inside and outside)
    median = np.median(authors_reconstruction(decoder, latents[0], angles[0], GRID, FRAMES))
    with torch.no_grad():
        getattr(decoder, f"lin{len(DIMS)}").bias -= float(median)
    return decoder, latents, angles


def _checkpoint(decoder, epoch=15000) -> dict:
    # saved from nn.DataParallel: every key prefixed "module."
    return {"epoch": epoch, "model_state_dict": {f"module.{k}": v.clone() for k, v in decoder.state_dict().items()}}


def make_experiment(root, model, layout: str, *, epochs=(20, 40), specs=None):
    """An experiment folder in one of the layouts the authors' code writes or reads."""
    decoder, latents, angles = model
    root.mkdir(parents=True)
    (root / "specs.json").write_text(json.dumps(specs or SPECS))
    if layout == "head":  # published test.py default
        (root / "model_parameters").mkdir()
        (root / "latent_codes").mkdir()
        torch.save(_checkpoint(decoder), root / "model_parameters" / "model.pth")
        scipy.io.savemat(root / "latent_codes" / "lat_vecs.mat", {"lat_vecs": latents})
        scipy.io.savemat(root / "latent_codes" / "rot_angs.mat", {"rot_ang": angles})
    elif layout == "snapshots":  # published train.py: every LogFrequency epochs, str(epoch).zfill(4)
        (root / "model_parameters").mkdir()
        (root / "latent_codes").mkdir()
        for e in epochs:
            k = str(e).zfill(4)
            torch.save(_checkpoint(decoder, e), root / "model_parameters" / f"e{k}_model.pth")
            # codes of other epochs differ, so a mismatched pairing is detected
            scipy.io.savemat(root / "latent_codes" / f"e{k}_lat_vecs.mat",
                             {"lat_vecs": latents if e == max(epochs) else latents * 0.5 + 0.01 * e})
            scipy.io.savemat(root / "latent_codes" / f"e{k}_rot_angs.mat", {"rot_ang": angles})
    elif layout == "april2023":  # 7bd2314: latest.pth, .mat files at the experiment root
        (root / "model_parameters").mkdir()
        torch.save(_checkpoint(decoder), root / "model_parameters" / "latest.pth")
        scipy.io.savemat(root / "lat_vecs.mat", {"lat_vecs": latents})
        scipy.io.savemat(root / "rot_angs.mat", {"rot_ang": angles})
    elif layout == "miccai":  # ff0a604: latest.pth, latent_vecs.mat, no rotations
        for sub in ("model_parameters", "optimizer_parameters", "latent_codes"):
            (root / sub).mkdir()
        torch.save(_checkpoint(decoder), root / "model_parameters" / "latest.pth")
        scipy.io.savemat(root / "latent_vecs.mat", {"lat_vecs": latents})
    elif layout == "one_rotation":  # svens_equi_decoder branch: rot_ang.mat, one rotation, xyz @ E.T
        (root / "model_parameters").mkdir()
        torch.save(_checkpoint(decoder), root / "model_parameters" / "latest.pth")
        scipy.io.savemat(root / "latent_vecs.mat", {"lat_vecs": latents})
        scipy.io.savemat(root / "rot_ang.mat", {"rot_ang": angles[0]})
    elif layout == "camelcase":  # the layout cellinr once assumed: still accepted
        (root / "ModelParameters").mkdir()
        (root / "LatentCodes").mkdir()
        torch.save(_checkpoint(decoder), root / "ModelParameters" / "model.pth")
        scipy.io.savemat(root / "LatentCodes" / "lat_vecs.mat", {"lat_vecs": latents})
        scipy.io.savemat(root / "LatentCodes" / "rot_angs.mat", {"rot_ang": angles})
    else:
        raise ValueError(layout)
    return root


def _reconstruct_sdf(run_dir, out) -> np.ndarray:
    """``cellinr reconstruct`` with the SDF written, every sequence: (N, T, Z, Y, X)."""
    assert main(["reconstruct", str(run_dir), "--out", str(out), "--formats", "sdf,tiff", "--method", "dense",
                 "--device", "cpu"]) == 0
    run = load_run(run_dir)
    arrays = []
    for name in run.names:
        with h5py.File(out / f"{name}.h5", "r") as f:
            arrays.append(np.asarray(f["sdf"]))
    return np.stack(arrays)


def test_default_axes_reconstruct_equals_the_authors_arrays_and_their_sdf_vid(model, tmp_path, capsys):
    """Both equalities of the import: cellinr reconstruct == the authors' reconstruction == cellinr's
    reading of the authors' sdf_vid file, array for array (no transposes), max difference < 1e-5."""
    decoder, latents, angles = model
    exp = make_experiment(tmp_path / "exp", model, "head")
    assert main(["import-reference", str(exp), "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "2 sequences, 3 frames of 6x7x5 (Z, Y, X), axes zyx" in printed
    ours = _reconstruct_sdf(tmp_path / "run", tmp_path / "recon")
    assert ours.shape == (2, FRAMES, *GRID)
    for s in range(2):
        theirs = authors_reconstruction(decoder, latents[s], angles[s], GRID, FRAMES)
        assert theirs.std() > 0.05 and (theirs <= 0).any() and (theirs > 0).any()  # a field with a surface
        print(f"seq {s}: max |reconstruct - authors' array| = {np.abs(ours[s] - theirs).max():.3g}")
        assert np.abs(ours[s] - theirs).max() < 1e-5
        write_authors_sdf_vid(tmp_path / f"rec_seq_{s:03d}.h5", theirs)
        src = open_source(tmp_path / f"rec_seq_{s:03d}.h5")
        assert src.format == "sdf_vid" and src.frame_shape == tuple(GRID)
        read = np.stack([src.read_frame(t) for t in range(src.n_frames)])
        src.close()
        print(f"seq {s}: max |reconstruct - cellinr's reading of the authors' sdf_vid| = {np.abs(ours[s] - read).max():.3g}")
        assert np.abs(ours[s] - read).max() < 1e-5
    # the masks are the authors' sdf <= 0
    from cellinr.io.tiff import read_tiff

    mask = read_tiff(tmp_path / "recon" / "seq_000.tif").data
    theirs0 = authors_reconstruction(decoder, latents[0], angles[0], GRID, FRAMES)
    assert np.array_equal(mask.astype(bool), theirs0 <= 0)
    # --reference-layout writes what the authors' loader reads back as their own array
    from cellinr.generation.frontends import reconstruct

    reconstruct(tmp_path / "run", tmp_path / "reflayout", formats="sdf", reference_layout=True, method="dense",
                device="cpu", sequences=[1])
    with h5py.File(tmp_path / "reflayout" / "seq_001.h5", "r") as f:
        back = np.array(f["sdf_vid"]).transpose(3, 2, 1, 0)
    assert np.abs(back - authors_reconstruction(decoder, latents[1], angles[1], GRID, FRAMES)).max() < 1e-5


def test_other_axes_permute_the_output(model, tmp_path):
    """``--axes xyz`` (the old default) gives the authors' array transposed, not the array."""
    decoder, latents, angles = model
    exp = make_experiment(tmp_path / "exp", model, "head")
    import_reference(exp, tmp_path / "run", axes="xyz")
    ours = _reconstruct_sdf(tmp_path / "run", tmp_path / "recon")
    theirs = authors_reconstruction(decoder, latents[0], angles[0], GRID, FRAMES)
    assert ours.shape[2:] == tuple(GRID[::-1])
    assert np.abs(ours[0] - theirs.transpose(0, 3, 2, 1)).max() < 1e-5


@pytest.mark.parametrize("layout", ["head", "snapshots", "april2023", "miccai", "one_rotation", "camelcase"])
def test_every_layout_imports_and_evaluates_the_authors_function(model, tmp_path, layout):
    decoder, latents, angles = model
    exp = make_experiment(tmp_path / "exp", model, layout)
    run = load_run(import_reference(exp, tmp_path / "run"))
    assert run.names == ["seq_000", "seq_001"] and run.frames == [FRAMES, FRAMES]
    assert run.config.model.hidden == DIMS and run.config.model.latent_dim == L
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, (300, 3)).astype(np.float32)  # the authors' coordinate columns (N0, N1, N2 axes)
    for s in range(2):
        if layout == "miccai":
            e = np.eye(3)
        elif layout == "one_rotation":
            e = euler_xyz(angles[0]).T  # one rotation for all, applied as xyz @ E.T
        else:
            e = euler_xyz(angles[s])
        t = -0.5 + s
        with torch.no_grad():
            xyzt = torch.from_numpy(np.concatenate([c @ e.astype(np.float32), np.full((300, 1), t, np.float32)], 1))
            expected = decoder(torch.from_numpy(latents[s])[None].expand(300, -1), xyzt)[:, 0].numpy()
            ours = np.stack([c[:, 2], c[:, 1], c[:, 0]], 1)  # default axes zyx: column 0 is Z, our x is column 2
            got = run.field(s)(torch.from_numpy(np.concatenate([ours, np.full((300, 1), t, np.float32)], 1)))
        np.testing.assert_allclose(got.numpy(), expected, atol=2e-5, rtol=1e-4)


def test_snapshots_latest_by_default_epoch_chooses_with_its_own_codes(model, tmp_path, caplog):
    decoder, latents, angles = model
    exp = make_experiment(tmp_path / "exp", model, "snapshots", epochs=(20, 9980, 10000))
    with caplog.at_level(logging.WARNING):
        run = load_run(import_reference(exp, tmp_path / "latest"))
    # 10000 > 9980 although "e10000" < "e9980" as text
    assert "3 snapshots (epochs 20-10000); using the latest, epoch 10000 (e10000_model.pth)" in caplog.text
    assert run.info["epochs"] == 10000
    np.testing.assert_array_equal(run.codes, latents)
    run20 = load_run(import_reference(exp, tmp_path / "e20", epoch=20))
    assert run20.info["epochs"] == 20 and run20.info["codes_file"].endswith("e0020_lat_vecs.mat")
    np.testing.assert_allclose(run20.codes, latents * 0.5 + 0.2, rtol=1e-6)
    with pytest.raises(RunError, match="no snapshot of epoch 30 .*snapshots: 20, 9980, 10000"):
        import_reference(exp, tmp_path / "e30", epoch=30)
    (exp / "latent_codes" / "e9980_lat_vecs.mat").unlink()
    with pytest.raises(RunError, match="no e9980_lat_vecs.mat for e9980_model.pth"):
        import_reference(exp, tmp_path / "e9980", epoch=9980)
    assert main(["import-reference", str(exp), "--out", str(tmp_path / "cli20"), "--epoch", "20"]) == 0


def test_weights_that_do_not_match_specs_name_the_layer_and_both_shapes(model, tmp_path, capsys):
    specs = json.loads(json.dumps(SPECS))
    specs["NetworkSpecs"]["dims"] = [128, 128, 128, 320, 128, 128, 320, 128, 128, 96]
    exp = make_experiment(tmp_path / "exp", model, "head", specs=specs)
    assert main(["import-reference", str(exp), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "lin9.weight has shape (124, 128), specs.json gives (92, 128)" in err
    specs["NetworkSpecs"]["dims"] = DIMS
    specs["CodeLength"] = L + 1
    (exp / "specs.json").write_text(json.dumps(specs))
    with pytest.raises(RunError, match=r"lin0.weight has shape \(124, 196\), specs.json gives \(124, 197\)"):
        import_reference(exp, tmp_path / "run")


def test_import_errors_and_cli(model, tmp_path, capsys):
    exp = make_experiment(tmp_path / "exp", model, "head")
    (tmp_path / "not_an_experiment").mkdir()
    with pytest.raises(RunError, match="no specs.json"):
        import_reference(tmp_path / "not_an_experiment", tmp_path / "o")
    with pytest.raises(RunError, match="permutation"):
        import_reference(exp, tmp_path / "o", axes="xxz")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "specs.json").write_text(json.dumps(SPECS))
    with pytest.raises(RunError, match="no model_parameters folder"):
        import_reference(empty, tmp_path / "o")
    (empty / "model_parameters").mkdir()
    (empty / "model_parameters" / "model.pth").write_bytes((exp / "model_parameters" / "model.pth").read_bytes())
    with pytest.raises(RunError, match="no latent codes for model.pth"):
        import_reference(empty, tmp_path / "o")
    assert main(["import-reference", str(exp), "--out", str(tmp_path / "cli")]) == 0
    assert load_run(tmp_path / "cli").config.train.rotations
    with pytest.raises(OutputExistsError):
        import_reference(exp, tmp_path / "cli")
    assert main(["import-reference", str(exp), "--out", str(tmp_path / "cli")]) == 2
    assert "output exists" in capsys.readouterr().err


def test_imported_run_reconstructs_with_fast_and_dense(model, tmp_path):
    from cellinr.generation.frontends import reconstruct
    from cellinr.io.tiff import read_tiff

    # SIREN-initialised output layer: a smooth field, as the fast evaluator's distance bound assumes
    smooth = (AuthorsDecoder(rng=np.random.default_rng(2), output_bound=None).eval(), *model[1:])
    run = import_reference(make_experiment(tmp_path / "exp", smooth, "head"), tmp_path / "run")
    assert load_run(run).manifest["clamp"] == 32.0
    for method in ("fast", "dense"):
        reconstruct(run, tmp_path / method, size=16, frames=2, method=method, device="cpu", sequences=[0])
    fast = read_tiff(tmp_path / "fast" / "seq_000.tif").data
    dense = read_tiff(tmp_path / "dense" / "seq_000.tif").data
    assert fast.shape == (2, 16, 16, 16)
    assert np.mean(fast != dense) <= 0.001
