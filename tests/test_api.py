"""The public API holds: every public name stays callable whatever was imported, and every function
works when called twice in one process, in two different orders."""

import importlib
import pkgutil

import numpy as np
import pytest
import scipy.io
import torch

import cellinr
from cellinr.cli import COMMAND_MODULES, main
from cellinr.io.tiff import write_tiff


def _public_names():
    return [n for n in cellinr.__all__ if not n.startswith("_")]


# third-party packages of the optional extras (pyproject.toml): a module that needs one of them may
# stay unimported when that extra is not installed; any other import failure fails the test
OPTIONAL_DEPENDENCIES = {"napari", "magicgui", "qtpy", "napari_ome_zarr", "zarr", "ome_zarr", "bioimageio",
                         "laptrack", "ctc_metrics"}


def test_public_names_stay_callable_after_importing_every_submodule():
    for info in pkgutil.walk_packages(cellinr.__path__, "cellinr."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as missing:
            if (missing.name or "").split(".")[0] not in OPTIONAL_DEPENDENCIES:
                raise
    not_callable = [n for n in _public_names() if not callable(getattr(cellinr, n))]
    assert not_callable == []
    # cellinr.cli.<command> modules are named after their subcommands inside the cli namespace, where
    # they cannot replace a function of the package; no other module may carry a public name
    modules = {info.name.rsplit(".", 1)[-1] for info in pkgutil.walk_packages(cellinr.__path__, "cellinr.")
               if not info.name.startswith("cellinr.cli.")}
    assert not set(_public_names()) & modules, "a public name is also a module name"


def test_every_subcommand_imports_and_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    for name in COMMAND_MODULES:
        command = name.replace("_", "-")
        assert command in listing, command
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0, command
    capsys.readouterr()


def _reference_experiment(folder, run):
    """A minimal experiment folder in the authors' layout holding the decoder of ``run``."""
    import json

    dec = run.decoder
    state = {f"module.lin{k}.{kind}": getattr(lin, kind).detach().clone()
             for k, lin in enumerate([layer.linear for layer in dec.layers] + [dec.output]) for kind in ("weight", "bias")}
    (folder / "model_parameters").mkdir(parents=True)
    torch.save({"epoch": 1, "model_state_dict": state}, folder / "model_parameters" / "model.pth")
    (folder / "specs.json").write_text(json.dumps({
        "CodeLength": dec.latent_dim,
        "NetworkSpecs": {"dims": dec.hidden, "latent_in": dec.latent_in, "xyz_in_all": dec.xyz_in_all,
                         "use_sine": True},
        "ReconstructionDims": [16, 16, 16], "ReconstructionFramesPerSequence": 2,
    }))
    scipy.io.savemat(folder / "lat_vecs.mat", {"lat_vecs": run.codes.astype(np.float64)})
    return folder / "model_parameters" / "model.pth"


def _workflow(root):
    """Every public function, in workflow order; returns the calls so they can be replayed."""
    from cellinr.model.registry import bundled_texture_model

    calls = []

    def call(name, *args, **kwargs):
        calls.append((name, args, kwargs))
        return getattr(cellinr, name)(*args, **kwargs)

    sim = root / "sim"
    call("simulate", sim, kind="dividing", sequences=2, frames=3, size=24, seed=0, overwrite=True)
    call("simulate_sequence", "deforming", 0, frames=2, size=16)
    src = sorted(sim.glob("*.tif"))[0]
    with call("open_source", src) as source:
        assert source.n_frames == 3
    assert "frames" in call("describe", src)
    data = call("prepare", sorted(sim.glob("*.tif")), root / "data", size=24, clamp=4, preview=False,
                overwrite=True, progress=False)
    run_dir = call("train", data, root / "run", preset="tiny", overwrite=True, progress=False)
    run = call("load_run", run_dir)
    sdf = call("decode", run, run.codes[0], size=12, frames=2, device="cpu")
    assert sdf.shape == (2, 12, 12, 12)
    model_file = _reference_experiment(root / "experiment", run)
    call("import_reference", root / "experiment", root / "imported", model_file=model_file, overwrite=True)
    call("reconstruct", run_dir, root / "recon", size=16, device="cpu", overwrite=True)
    call("generate", run_dir, root / "gen", n=2, size=16, frames=3, device="cpu", overwrite=True)
    cell, _ = call("sample_cell", run_dir, seed=0, index=1, size=16, frames=3, device="cpu")
    assert cell.shape == (3, 16, 16, 16)
    call("interpolate", run_dir, root / "interp", start=0, end=1, steps=2, size=16, device="cpu", overwrite=True)
    call("fit", run_dir, data, root / "fit", steps=2, device="cpu", overwrite=True)
    assert call("apply_fit", run, root / "fit").names
    rows, summary = call("compare_masks", root / "recon", root / "recon")
    assert summary["dice"]["min"] == 1.0
    labels = np.zeros((2, 32, 32), np.uint16)
    labels[:, 8:16, 8:16] = 1
    labels[:, 18:28, 16:26] = 2
    image = call("render", labels, seed=0)
    write_tiff(root / "masks.tif", labels, axes="TYX")
    write_tiff(root / "image.tif", image, axes="TYX")
    assert call("estimate_render_params", image[0].astype(np.float32), labels[0]) is not None
    call("render_masks", root / "masks.tif", root / "rendered", seed=0, overwrite=True)
    call("train_texture", root / "image.tif", root / "masks.tif", root / "texture", size=32, epochs=1,
         steps_per_epoch=1, net={"ngf": 4, "n_downsample": 1, "n_blocks": 1, "ndf": 4, "n_layers_d": 1, "num_d": 1},
         device="cpu", overwrite=True)
    assert call("load_texture_model", bundled_texture_model(), device="cpu") is not None
    call("apply_texture", root / "texture", root / "masks.tif", root / "textured", device="cpu", overwrite=True)
    call("benchmark", sim, root / "bench", seed=0, device="cpu", overwrite=True)
    scene_dir = call("scene", ["dividing"], root / "scene", cells=2, dims=(1, 48, 48), frames=3, seed=0,
                     overwrite=True)
    assert call("dataset_quality", scene_dir / "ctc")["cells_per_frame"] > 0
    assert 0.0 <= call("scene_difficulty", scene_dir / "ctc")["SEG"] <= 1.0
    rows = call("measure", sim)
    assert rows and all(r["volume_um3"] > 0 for r in rows)
    call("compare", sim, root / "gen", root / "report", figures=False, overwrite=True)
    call("compare_activations", data, root / "activations", preset="tiny", epochs=1, device="cpu", overwrite=True,
         progress=False)
    call("rotation_report", run_dir, root / "rotation_report", overwrite=True)
    call("demo", root / "demo", sequences=1, size=24, frames=2, kinds=["deforming"], reference_sequences=2,
         overwrite=True, verbose=False)
    return calls


def test_every_public_function_twice_in_two_orders(tmp_path):
    calls = _workflow(tmp_path)
    assert sorted({name for name, _, _ in calls}) == sorted(_public_names()), "a public function is not exercised"
    # the second time in reverse order: the first round's outputs are the inputs, every output is replaced
    for name, args, kwargs in reversed(calls):
        result = getattr(cellinr, name)(*args, **kwargs)
        if name == "open_source":
            result.close()


def test_typing_stub_lists_the_api():
    from pathlib import Path

    stub = (Path(cellinr.__file__).parent / "__init__.pyi").read_text()
    for name, target in cellinr._API.items():
        module, attr = target.split(":")
        assert f"from {module} import {attr} as {name}\n" in stub, name
