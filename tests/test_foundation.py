
import numpy as np
import pytest

from cellinr._util.atomic import atomic_dir
from cellinr.cli import main
from cellinr.errors import DatasetError, OutputExistsError
from cellinr.io.sdf_dataset import (
    SDFDataset,
    new_manifest,
    write_manifest,
    write_sequence,
)
from cellinr.io.tiff import read_tiff, write_tiff


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "COMMAND" in capsys.readouterr().out


def test_tiff_roundtrip_keeps_axes_and_spacing(tmp_path):
    data = (np.random.default_rng(0).random((3, 4, 5, 6)) > 0.5).astype(np.uint8)
    write_tiff(tmp_path / "a.tif", data, axes="TZYX", spacing=(2.0, 0.5, 0.25))
    img = read_tiff(tmp_path / "a.tif")
    assert img.axes == "TZYX"
    np.testing.assert_array_equal(img.data, data)
    np.testing.assert_allclose(img.spacing, (2.0, 0.5, 0.25), rtol=1e-5)


def test_sdf_dataset_roundtrip(tmp_path):
    frames = [np.full((4, 5, 6), t, np.float32) for t in range(3)]
    write_sequence(tmp_path / "s.h5", frames, n_frames=3, shape=(4, 5, 6))
    write_manifest(tmp_path, new_manifest(sequences=[{"name": "s", "file": "s.h5", "frames": 3, "shape": [4, 5, 6]}]))
    ds = SDFDataset(tmp_path)
    assert ds.names == ["s"]
    np.testing.assert_array_equal(ds.read_frame(0, 2), frames[2])
    assert len(list(ds.iter_frames(0))) == 3
    (tmp_path / "s.h5").unlink()
    with pytest.raises(DatasetError, match="missing sequence files"):
        SDFDataset(tmp_path)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "x").write_text("partial")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("done")
    assert (out / "x").read_text() == "done"
    with pytest.raises(OutputExistsError):
        with atomic_dir(out):
            pass
