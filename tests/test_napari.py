"""The napari plugin: manifest, reader layers (without a viewer), and a headless viewer when napari is installed.

napari is not in the ``dev`` extra: with a Qt binding and OpenGL it is a few hundred MB and needs a
display server stand-in, too heavy for every CI run. Tests that need it skip when it is missing; the
layer data, the manifest (npe2) and the sample/fit functions are tested without it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest

from cellinr.napari import _layers

MANIFEST = Path(_layers.__file__).with_name("napari.yaml")
SIZE = 16


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from cellinr.generation.frontends import generate

    out = tmp_path_factory.mktemp("napari") / "gen"
    generate("dividing", out, n=2, size=SIZE, frames=4, latent="perturb", formats="tiff,mesh,ome-zarr", device="cpu")
    return out


@pytest.fixture(scope="module")
def bench(generated):
    from cellinr.benchmarking import benchmark

    return benchmark(generated, generated.parent / "bench", formats="tiff,ome-zarr")


def test_manifest_is_valid_and_complete():
    npe2 = pytest.importorskip("npe2")
    from cellinr.model.registry import bundled_shape_models

    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "cellinr"
    contrib = manifest.contributions
    assert sorted(s.key for s in contrib.sample_data) == sorted(bundled_shape_models())
    for command in contrib.commands:
        module, attr = command.python_name.split(":")
        if module.endswith("_widget") and importlib.util.find_spec("napari") is None:
            continue
        assert callable(getattr(importlib.import_module(module), attr)), command.id
    assert contrib.readers[0].accepts_directories


def test_reader_layers_of_generated_folder_mesh_and_benchmark(generated, bench):
    import json

    record = json.loads((generated / "cell_0000.json").read_text())
    voxel = record["options"]["voxel_size_um"]
    layers = _layers.read_path(generated)
    kinds = [t for _, _, t in layers]
    assert kinds == ["labels", "surface", "labels", "surface"]
    data, meta, _ = layers[0]
    assert data.shape == (4, SIZE, SIZE, SIZE) and meta["scale"][1:] == pytest.approx(voxel)
    assert meta["units"][1:] == ("micrometer",) * 3
    vertices, _ = layers[1][0]
    assert vertices.shape[1] == 4 and set(np.unique(vertices[:, 0])) == {0, 1, 2, 3}  # (t, z, y, x)
    # the surface lies on the mask, in microns: vertex extent matches the mask's extent
    zyx = vertices[vertices[:, 0] == 0, 1:]
    inside = np.argwhere(data[0]) * np.asarray(voxel)
    assert np.allclose(zyx.min(0), inside.min(0), atol=voxel[0]) and np.allclose(zyx.max(0), inside.max(0), atol=voxel[0])
    # one mesh file, and a benchmark (image + labels per sequence, 2D + t)
    (mesh,) = _layers.read_path(generated / "meshes" / "cell_0000" / "t0002.ply")
    assert mesh[2] == "surface" and mesh[0][0].shape[1] == 3
    blayers = _layers.read_path(bench)
    assert [t for _, _, t in blayers] == ["image", "labels", "image", "labels"]
    assert blayers[0][0].shape == (4, SIZE, SIZE) and blayers[1][1]["scale"][1:] == pytest.approx(voxel[1:])
    assert _layers.read_path(generated / "cell_0001.tif")[0][1]["name"] == "cell_0001"
    assert _layers.read_path(generated.parent) is None  # not a cellinr folder


def test_reader_ome_zarr_only_folder_and_run_folder(generated, tmp_path):
    from cellinr.generation.frontends import generate

    generate("deforming", tmp_path / "z", n=1, size=12, frames=3, formats="ome-zarr", device="cpu")
    ((data, _, kind),) = _layers.read_path(tmp_path / "z")
    assert kind == "labels" and np.asarray(data).shape == (3, 12, 12, 12)
    from cellinr.model.registry import resolve_run
    from cellinr.model.run import load_run

    run = resolve_run("deforming")
    assert _layers.reader_for(run).func is _layers.run_layers  # read at RUN_PREVIEW_SIZE^3 by the plugin
    layers = _layers.run_layers(run, size=12)
    assert len(layers) == len(load_run(run).names) and all(t == "labels" for _, _, t in layers)
    assert layers[0][0].shape == (10, 12, 12, 12) and layers[0][0].any()


def test_generated_layer_is_the_cell_generate_writes(generated, tmp_path):
    from cellinr.generation.frontends import generate
    from cellinr.io.tiff import read_tiff

    data, meta, kind = _layers.generated_layer("dividing", seed=0, size=SIZE, frames=4, latent="perturb", device="cpu")
    assert kind == "labels" and np.array_equal(data, read_tiff(generated / "cell_0000.tif").data)
    # the default sampler is generate's default (the model's recommendation)
    (record,) = generate("deforming", tmp_path / "g", n=1, seed=5, size=12, frames=2, device="cpu")
    data, meta, _ = _layers.generated_layer("deforming", seed=5, size=12, frames=2, device="cpu")
    assert meta["metadata"]["sampler"] == record["sampler"]
    assert np.array_equal(data, read_tiff(tmp_path / "g" / "cell_0000.tif").data)


def test_fit_labels_places_fitted_cells_over_the_layer(tmp_path):
    zz, yy, xx = np.indices((30, 40, 40))
    labels = np.zeros((2, 30, 40, 40), np.uint16)
    for t in range(2):
        labels[t][(zz - 15) ** 2 + (yy - 20) ** 2 + (xx - 14 - t) ** 2 <= 36] = 5
    layers, results = _layers.fit_labels("deforming", labels, scale=(3.0, 1.0, 1.0, 1.0), steps=5, device="cpu",
                                         size=SIZE, workdir=tmp_path)
    assert len(layers) == 1 and results[0]["label"] == 5 and 0 <= results[0]["dice"] <= 1
    data, meta, _ = layers[0]
    assert data.shape[0] == 2 and meta["scale"][0] == 3.0
    # the fitted cube's world extent contains the cell
    extent = np.asarray(meta["translate"][1:]) + (np.asarray(data.shape[1:]) - 1) * np.asarray(meta["scale"][1:])
    assert np.all(np.asarray(meta["translate"][1:]) < [9, 14, 8]) and np.all(extent > [21, 26, 21])
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone


# -- a headless napari viewer ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def viewer():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    pytest.importorskip("napari")
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    if "cellinr" not in pm._manifests:  # the installed cellinr may be another checkout: use this one's manifest
        pm.register(npe2.PluginManifest.from_file(MANIFEST))
    # the viewer model: layers, readers and sample data without a canvas (offscreen Qt has no OpenGL
    # context for vispy); the widget still builds its Qt controls (QT_QPA_PLATFORM=offscreen)
    from napari.components import ViewerModel

    yield ViewerModel()


def test_viewer_opens_generated_folder_mesh_and_benchmark(viewer, generated, bench):
    import json

    voxel = json.loads((generated / "cell_0000.json").read_text())["options"]["voxel_size_um"]
    viewer.layers.clear()
    viewer.open(str(generated), plugin="cellinr")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Labels", "Surface", "Labels", "Surface"]
    labels = viewer.layers["cell_0000"]
    assert labels.data.shape == (4, SIZE, SIZE, SIZE) and tuple(labels.scale[1:]) == pytest.approx(voxel)
    assert [str(u) for u in labels.units[1:]] == ["micrometer"] * 3
    viewer.layers.clear()
    viewer.open(str(generated / "meshes" / "cell_0001" / "t0000.ply"), plugin="cellinr")
    assert type(viewer.layers[0]).__name__ == "Surface" and viewer.layers[0].data[0].shape[1] == 3
    viewer.layers.clear()
    viewer.open(str(bench), plugin="cellinr")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels", "Image", "Labels"]
    assert viewer.layers[0].data.shape == (4, SIZE, SIZE) and tuple(viewer.layers[1].scale[1:]) == pytest.approx(voxel[1:])


def test_viewer_sample_data_generates_a_cell(viewer):
    viewer.layers.clear()
    viewer.open_sample("cellinr", "dividing")
    (layer,) = viewer.layers
    assert type(layer).__name__ == "Labels" and layer.data.shape == (10, 64, 64, 64) and layer.data.any()


def test_widget_generates_and_fits(viewer, generated, tmp_path):
    try:  # the widget's controls need Qt bindings (napari[all] has them); qtpy's error is no ImportError
        import qtpy  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no Qt bindings: {exc.__class__.__name__}")
    from cellinr.io.tiff import read_tiff
    from cellinr.napari._widget import CellinrWidget

    viewer.layers.clear()
    widget = CellinrWidget(viewer)
    widget.model.value = "dividing"
    widget.seed.value, widget.size.value, widget.frames.value, widget.sampler.value = 0, SIZE, 4, "perturb"
    layer = widget.generate()
    assert np.array_equal(layer.data, read_tiff(generated / "cell_0000.tif").data)
    assert widget.labels_layer.value is layer  # the new layer is offered for fitting
    # a generated dividing cell may fill the model's whole cube; fit a nucleus-sized ball (40 um across,
    # inside the model's 60 um cube with its margin) given at 2 um per voxel
    grid = np.indices((24, 24, 24))
    ball = (((grid - 11.5) ** 2).sum(axis=0) <= 10**2).astype(np.uint8)
    widget.labels_layer.value = viewer.add_labels(np.stack([ball] * 2), scale=(1.0, 2.0, 2.0, 2.0))
    widget.steps.value = 5
    results = widget.fit()
    assert len(results) == 1 and "mean Dice" in widget.status.value
    assert any(lyr.name.startswith("fit of label 1") for lyr in viewer.layers)


def test_view_mesh_without_napari_writes_a_picture(generated, tmp_path):
    import imageio.v3 as iio

    from cellinr.cli import main
    from cellinr.cli.view import layers_for

    mesh = generated / "meshes" / "cell_0000" / "t0001.ply"
    assert main(["view", str(mesh), "--no-napari", "--out", str(tmp_path / "m.png")]) == 0
    picture = iio.imread(tmp_path / "m.png")
    assert picture.ndim == 3 and picture.shape[1] > 600 and picture[..., :3].std() > 10
    ((data, _, kind),) = layers_for(mesh)  # what napari gets
    assert kind == "surface" and data[0].shape[1] == 3 and len(data[1]) > 0


def test_view_folder_without_napari_is_one_line_with_the_hint(generated, capsys):
    from cellinr.cli import main

    assert main(["view", str(generated), "--no-napari"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "cellinr[napari]"' in err and str(generated) in err


def test_widget_module_imports_without_napari_and_names_the_extra():
    import cellinr.napari._widget as widget

    if importlib.util.find_spec("napari") is not None and importlib.util.find_spec("magicgui") is not None:
        assert callable(widget.CellinrWidget)
    else:
        with pytest.raises(ImportError, match=r"pip install 'cellinr\[napari\]'"):
            widget.CellinrWidget
