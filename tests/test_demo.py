"""The main job on the bundled models, at a reduced setting."""

import json

import numpy as np

from cellinr.cli import main
from cellinr.io.ctc import check_ctc_sequence, read_ctc_sequence
from cellinr.io.tiff import read_tiff
from cellinr.model.registry import (
    bundled_shape_models,
    bundled_texture_model,
    resolve_run,
)


def test_bundled_models_are_installed_and_documented():
    assert bundled_shape_models() == ["deforming", "dividing", "filopodial", "platynereis"]
    for name in bundled_shape_models():
        folder = resolve_run(name)
        stats = json.loads((folder / "training.json").read_text())
        assert stats["dice_mean"] >= 0.9, name
        assert "Dice" in (folder / "README.md").read_text()
    assert bundled_texture_model() is not None


def test_demo_reduced(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--sequences", "1", "--size", "32", "--frames", "3",
                 "--kinds", "dividing", "filopodial"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Demo finished" in printed and str(out) in printed
    for kind in ("dividing", "filopodial"):
        masks = read_tiff(out / "generated" / kind / f"{kind}_0000.tif")
        assert masks.axes == "TZYX" and masks.data.shape == (3, 32, 32, 32)
        assert masks.data.any(axis=(1, 2, 3)).all(), "every generated frame holds a cell"
        image = read_tiff(out / "benchmark" / kind / "sequences" / f"{kind}_0000_image.tif").data
        assert image.shape == (3, 32, 32) and np.ptp(image) > 0
        assert check_ctc_sequence(read_ctc_sequence(out / "benchmark" / kind / "ctc", 1)) == []
        report = out / "report" / kind
        assert (report / "report.md").is_file() and len(list(report.glob("figures/*.png"))) >= 3
        assert (out / "pictures" / f"{kind}_0000.gif").stat().st_size > 0
        assert (out / "pictures" / f"{kind}_0000_montage.png").stat().st_size > 0
    records = [*out.rglob("*.json"), *out.rglob("*.md")]
    assert records and not any(".tmp-" in f.read_text() for f in records), "records name the final folder"
    # a rerun without --overwrite refuses to touch the finished demo
    assert main(["demo", "--out", str(out), "--kinds", "dividing"]) == 2


def test_demo_rejects_unknown_model(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--kinds", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
