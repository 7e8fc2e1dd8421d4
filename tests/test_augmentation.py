"""Augmented copies of training sequences (train.augment): transforms, version choice, training and outputs."""
import json

import numpy as np
import pytest
import torch

from cellinr.errors import ConfigError
from cellinr.model.config import config_from_dict
from cellinr.model.run import load_run
from cellinr.training.augmentation import augmentation
from cellinr.training.shape import train
from test_train import _params, make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_transforms_are_similarities_fixed_by_the_seed():
    aug = augmentation(3, 4, scale=(0.8, 1.25), mirror=True, seed=7)
    assert aug.rows == 15 and len(aug.matrices) == 15
    np.testing.assert_array_equal(aug.matrices[:3], np.eye(3)[None].repeat(3, 0))
    for a, s, r in zip(aug.matrices, aug.scales, aug.rotations):
        assert 0.8 - 1e-6 <= s <= 1.25 + 1e-6
        np.testing.assert_allclose(a.T @ a, s * s * np.eye(3), atol=1e-5)  # scale times an orthogonal matrix
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(r) > 0
    dets = np.sign(np.linalg.det(aug.matrices[3:]))
    assert (dets < 0).any() and (dets > 0).any()  # some copies are mirrored, some not
    again = augmentation(3, 4, scale=(0.8, 1.25), mirror=True, seed=7)
    np.testing.assert_array_equal(again.matrices, aug.matrices)
    assert not np.allclose(augmentation(3, 4, seed=8).matrices[3:], aug.matrices[3:])
    assert aug.names(["a", "b", "c"])[:4] == ["a", "b", "c", "a_aug1"] and aug.names(["a", "b", "c"])[-1] == "c_aug4"


def test_versions_depend_on_seed_epoch_and_sequence_only():
    aug = augmentation(5, 3, seed=1)
    seq = np.array([0, 3, 4])
    rows = aug.rows_of(seq, 10)
    assert ((rows % 5) == seq).all() and (rows < aug.rows).all()
    np.testing.assert_array_equal(aug.rows_of(np.array([4, 0]), 10), rows[[2, 0]])  # not the position in the step
    chosen = np.concatenate([aug.rows_of(np.arange(5), e) // 5 for e in range(200)])
    assert set(chosen.tolist()) == {0, 1, 2, 3}  # every version is trained
    assert np.array_equal(augmentation(5, 0).rows_of(seq, 3), seq)


def test_transformed_points_carry_the_sdf_of_the_transformed_shape():
    # an off-centre sphere: d(x) = |x - c| - r; the copy y = s R M x has d'(y) = |y - A c| - s r = s d(x)
    aug = augmentation(1, 6, scale=(0.7, 1.4), seed=3)
    c, r = torch.tensor([0.2, -0.1, 0.3]), 0.4
    x = torch.rand(7, 500, 3) * 2 - 1
    d = (x - c).norm(dim=-1) - r
    rows = torch.arange(7)
    y, dy = aug.apply(rows, x, d)
    for k in range(7):
        a = torch.as_tensor(aug.matrices[k])
        s = float(aug.scales[k])
        expected = (y[k] - a @ c).norm(dim=-1) - s * r
        torch.testing.assert_close(dy[k], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(y[0], x[0]) and torch.testing.assert_close(dy[0], d[0])


def test_config_checks():
    with pytest.raises(ConfigError, match="train.augment:"):
        config_from_dict({"train": {"augment": -1}})
    with pytest.raises(ConfigError, match="train.augment_scale"):
        config_from_dict({"train": {"augment_scale": [1.2, 0.9]}})


def test_training_with_copies_writes_them_after_the_originals_and_resumes_exactly(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    cfg = {"sampling": {"fraction": 0.05}, "train": {"augment": 2, "epochs": 4, "checkpoint_every": 1}}
    full = train(ds, tmp_path / "full", preset="tiny", config=cfg, rotations=True, seed=2, progress=False)
    run = load_run(full)
    assert run.names == ["cell0", "cell1", "cell0_aug1", "cell1_aug1", "cell0_aug2", "cell1_aug2"]
    assert run.latents.shape[0] == 6 and run.originals == 2 and run.frames == [3] * 6
    record = json.loads((full / "run.json").read_text())["augment"]
    assert record["copies"] == 2 and record["originals"] == 2 and len(record["matrices"]) == 4
    part = train(ds, tmp_path / "part", preset="tiny", seed=2, progress=False, rotations=True,
                 config={**cfg, "train": {**cfg["train"], "epochs": 2}})
    train(ds, part, epochs=4, resume=True, progress=False)
    a, b = _params(full), _params(part)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # reconstruct renders the training sequences proper by default, a copy on request
    from cellinr import reconstruct

    recs = reconstruct(full, tmp_path / "rec", size=16, device="cpu")
    assert [r["name"] for r in recs] == ["cell0", "cell1"]
    one = reconstruct(full, tmp_path / "rec1", size=16, device="cpu", sequences=["cell1_aug2"])
    assert [r["name"] for r in one] == ["cell1_aug2"]


def test_original_share_sets_how_often_the_originals_train():
    aug = augmentation(4, 4, seed=0, original_share=0.5)
    chosen = np.concatenate([aug.rows_of(np.arange(4), e) // 4 for e in range(400)])
    assert abs((chosen == 0).mean() - 0.5) < 0.05 and set(chosen.tolist()) == {0, 1, 2, 3, 4}
    assert (augmentation(4, 4, seed=0, original_share=1.0).rows_of(np.arange(4), 3) == np.arange(4)).all()
