"""Texture models in the BioImage Model Zoo format: export (validated by bioimageio), import, loading.

bioimageio.spec is not in the ``dev`` extra (a large dependency tree, and each export validates and
hashes the package: about 20 s here), so these tests skip in CI unless it is installed; ``pip install
"cellinr[bioimageio]"`` runs them, and ``-m slow`` adds the bioimageio.core model test.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cellinr.errors import DependencyError, RunError
from cellinr.texture.apply import load_texture_model, texture_labels


def _labels():
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int32)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 1
    labels[(yy - 40) ** 2 + (xx - 44) ** 2 < 144] = 2
    return labels


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    pytest.importorskip("bioimageio.spec")
    from cellinr.cli import main

    out = tmp_path_factory.mktemp("bioimageio") / "dsb2018_pkg"
    assert main(["texture", "export", "dsb2018", "--out", str(out), "--author", "A. Tester"]) == 0
    return out


def test_export_is_a_valid_bioimageio_model(package):
    from bioimageio.spec import load_description

    assert {p.name for p in package.iterdir()} >= {"rdf.yaml", "weights.pt", "weights_torchscript.pt",
                                                    "test_input.npy", "test_output.npy", "README.md", "cover.png"}
    descr = load_description(package / "rdf.yaml")
    assert type(descr).__name__ == "ModelDescr" and descr.validation_summary.status == "valid-format"
    assert [a.name for a in descr.authors] == ["A. Tester"]
    assert np.load(package / "test_input.npy").shape[:2] == (1, 2)


@pytest.mark.slow
def test_export_passes_bioimageio_core_test_model(package):
    """bioimageio.core runs both weight formats on the test input and on other sizes and batches."""
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(package / "rdf.yaml")
    assert summary.status == "passed", [(d.name, [e.msg[:200] for e in d.errors]) for d in summary.details if d.errors]


def test_package_loads_back_as_the_same_texture_model(package, tmp_path):
    from cellinr.cli import main

    labels = _labels()
    expected = texture_labels(load_texture_model("dsb2018", device="cpu"), labels)
    for source in (package, package / "rdf.yaml"):
        assert np.array_equal(texture_labels(load_texture_model(source, device="cpu"), labels), expected)
    assert main(["texture", "import", str(package), "--out", str(tmp_path / "imported")]) == 0
    assert (tmp_path / "imported" / "texture_model.json").is_file()
    assert np.array_equal(texture_labels(load_texture_model(tmp_path / "imported", device="cpu"), labels), expected)
    # and the package's own test pair is the generator's output, in image units
    test_in, test_out = np.load(package / "test_input.npy"), np.load(package / "test_output.npy")
    model = load_texture_model(package, device="cpu")
    import torch

    with torch.no_grad():
        raw = model.generator(torch.from_numpy(test_in)).numpy()
    assert np.allclose((raw + 1) / 2 * (model.hi - model.lo) + model.lo, test_out, atol=1e-3)


@pytest.mark.slow
def test_zip_package(package, tmp_path):
    from cellinr.texture.bioimageio import export_bioimageio

    zipped = export_bioimageio("dsb2018", tmp_path / "dsb.zip")
    assert zipped.is_file()
    labels = _labels()
    assert np.array_equal(texture_labels(load_texture_model(zipped, device="cpu"), labels),
                          texture_labels(load_texture_model(package, device="cpu"), labels))


def test_foreign_or_broken_packages_are_one_line_errors(package, tmp_path):
    import shutil

    import yaml

    other = tmp_path / "other"
    shutil.copytree(package, other)
    rdf = yaml.safe_load((other / "rdf.yaml").read_text())
    del rdf["config"]
    (other / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(RunError, match=r"other: a bioimage.io model without a config.cellinr section"):
        load_texture_model(other)
    shutil.copytree(package, tmp_path / "noweights")
    (tmp_path / "noweights" / "weights.pt").unlink()
    with pytest.raises(RunError, match="weights file weights.pt is missing"):
        load_texture_model(tmp_path / "noweights")


def test_export_without_bioimageio_gives_install_hint(monkeypatch, tmp_path):
    from cellinr.texture.bioimageio import export_bioimageio

    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    monkeypatch.setitem(sys.modules, "bioimageio", None)
    with pytest.raises(DependencyError, match=r'pip install "cellinr\[bioimageio\]"'):
        export_bioimageio("dsb2018", tmp_path / "x")
