import json
import math

import numpy as np
import pytest
import scipy.io
import torch

from cellinr.cli import main
from cellinr.errors import OutputExistsError, RunError
from cellinr.model.reference import import_reference
from cellinr.model.run import load_run

L = 16
DIMS = [64, 64, 96, 64]
LATENT_IN = [3]


def _euler_xyz(a):
    """Rx(a0) @ Ry(a1) @ Rz(a2), written out independently of the package."""
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _reference_layers(rng):
    """Random weights in the reference DeepSDF layout (lin0 ... lin4, xyz_in_all, latent_in [3])."""
    d0 = L + 4
    dims = [d0, *DIMS, 1]
    n = len(dims)
    layers = []
    for k in range(n - 1):
        out = dims[k + 1] - d0 if k + 1 in LATENT_IN else dims[k + 1] - (4 if k != n - 2 else 0)
        fan_in = dims[k]
        bound = 1 / fan_in if k == 0 else math.sqrt(6 / fan_in) / 30
        layers.append((rng.uniform(-bound, bound, (out, fan_in)), rng.uniform(-0.1, 0.1, out)))
    return layers


def _reference_sdf(layers, latent, angles, c, t):
    """The reference evaluation: input [z, c @ E(angles), t], concatenations, sin(30 x)."""
    xyz = c @ _euler_xyz(angles)
    xyzt = np.concatenate([xyz, np.full((len(c), 1), t)], 1)
    inp = np.concatenate([np.repeat(latent[None], len(c), 0), xyzt], 1)
    x = inp
    for k, (w, b) in enumerate(layers):
        if k in LATENT_IN:
            x = np.concatenate([x, inp], 1)
        elif k != 0:
            x = np.concatenate([x, xyzt], 1)
        x = x @ w.T + b
        if k < len(layers) - 1:
            x = np.sin(30 * x)
    return x[:, 0]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    rng = np.random.default_rng(0)
    exp = tmp_path_factory.mktemp("exp")
    specs = {
        "Description": ["test"], "CodeLength": L,
        "NetworkSpecs": {"dims": DIMS, "dropout": [], "dropout_prob": 0.0, "norm_layers": [], "latent_in": LATENT_IN,
                         "xyz_in_all": True, "use_tanh": False, "latent_dropout": False, "weight_norm": False},
        "ReconstructionDims": [32, 32, 32], "ReconstructionFramesPerSequence": 5,
    }
    (exp / "specs.json").write_text(json.dumps(specs))
    layers = _reference_layers(rng)
    state = {}
    for k, (w, b) in enumerate(layers):
        state[f"module.lin{k}.weight"] = torch.tensor(w, dtype=torch.float32)
        state[f"module.lin{k}.bias"] = torch.tensor(b, dtype=torch.float32)
    (exp / "ModelParameters").mkdir()
    torch.save({"epoch": 1000, "model_state_dict": state}, exp / "ModelParameters" / "latest.pth")
    latents = rng.normal(0, 1 / math.sqrt(L), (3, L)).astype(np.float32)
    angles = rng.uniform(-math.pi, math.pi, (3, 3)).astype(np.float32)
    (exp / "LatentCodes").mkdir()
    scipy.io.savemat(exp / "LatentCodes" / "lat_vecs.mat", {"lat_vecs": latents})
    scipy.io.savemat(exp / "LatentCodes" / "rot_angs.mat", {"rot_ang": angles})
    # the reference evaluated with float32 weights, in float64
    layers32 = [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)) for w, b in layers]
    return exp, layers32, latents.astype(np.float64), angles.astype(np.float64)


@pytest.mark.parametrize("axes", ["xyz", "zyx", "yxz"])
def test_imported_run_evaluates_the_reference_formula(experiment, tmp_path, axes):
    exp, layers, latents, angles = experiment
    out = import_reference(exp, tmp_path / "run", axes=axes)
    run = load_run(out)
    assert run.names == ["seq_000", "seq_001", "seq_002"] and run.frames == [5, 5, 5]
    assert run.config.model.hidden == DIMS and run.config.model.latent_dim == L
    assert run.manifest["size"] == 32
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, (200, 3))  # the reference's coordinate columns
    ours = np.stack([c[:, axes.index(a)] for a in "xyz"], 1)  # our x, y, z of the same points
    for i in range(3):
        t = -0.5 + 0.5 * i
        expected = _reference_sdf(layers, latents[i], angles[i], c, t)
        pts = torch.tensor(np.concatenate([ours, np.full((200, 1), t)], 1), dtype=torch.float32)
        with torch.no_grad():
            got = run.field(i)(pts).double().numpy()
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
        assert np.std(expected) > 1e-3  # a non-trivial field
    if axes == "xyz":
        e = np.stack([_euler_xyz(a) for a in angles])
        np.testing.assert_allclose(run.rotations.numpy(), e.transpose(0, 2, 1), atol=1e-6)


def test_import_errors_and_cli(experiment, tmp_path, capsys):
    exp, *_ = experiment
    with pytest.raises(RunError, match="no specs.json"):
        import_reference(tmp_path, tmp_path / "o")
    with pytest.raises(RunError, match="permutation"):
        import_reference(exp, tmp_path / "o", axes="xxz")
    bad = tmp_path / "bad"
    bad.mkdir()
    specs = json.loads((exp / "specs.json").read_text())
    specs["CodeLength"] = L + 1
    (bad / "specs.json").write_text(json.dumps(specs))
    (bad / "ModelParameters").mkdir()
    (bad / "ModelParameters" / "latest.pth").write_bytes((exp / "ModelParameters" / "latest.pth").read_bytes())
    with pytest.raises(RunError, match="lin0.weight has shape"):
        import_reference(bad, tmp_path / "o")
    assert main(["import-reference", str(exp), "--out", str(tmp_path / "cli")]) == 0
    assert load_run(tmp_path / "cli").config.train.rotations
    with pytest.raises(OutputExistsError):
        import_reference(exp, tmp_path / "cli")
    assert main(["import-reference", str(exp), "--out", str(tmp_path / "cli")]) == 2
    assert "output exists" in capsys.readouterr().err


def test_imported_run_reconstructs_with_fast_and_dense(experiment, tmp_path):
    from cellinr.generation.frontends import reconstruct
    from cellinr.io.tiff import read_tiff

    exp = experiment[0]
    run = import_reference(exp, tmp_path / "run")
    assert load_run(run).manifest["clamp"] == 32.0
    for method in ("fast", "dense"):
        reconstruct(run, tmp_path / method, size=16, frames=2, method=method, device="cpu", sequences=[0])
    fast = read_tiff(tmp_path / "fast" / "seq_000.tif").data
    dense = read_tiff(tmp_path / "dense" / "seq_000.tif").data
    assert fast.shape == (2, 16, 16, 16)
    assert np.mean(fast != dense) <= 0.001
