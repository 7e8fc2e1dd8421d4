import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cellinr.cli import main
from cellinr.errors import (
    ConfigError,
    DatasetError,
    DeviceError,
    OutputExistsError,
    RunError,
)
from cellinr.io.sdf_dataset import (
    SDFDataset,
    new_manifest,
    write_manifest,
    write_sequence,
)
from cellinr.model.config import (
    PRESETS,
    from_yaml,
    load_config,
    preset,
    save_config,
    to_yaml,
)
from cellinr.model.run import load_run
from cellinr.training.checkpoint import list_checkpoints
from cellinr.training.sampling import (
    PointPool,
    frame_time,
    index_to_coords,
    sample_frame,
    window_batches,
)
from cellinr.training.shape import train

pytestmark = pytest.mark.usefixtures("one_thread")


def ellipsoid_sdf(size: int, axes_vox: tuple[float, float, float], clamp: float) -> np.ndarray:
    """(Z, Y, X) normalised SDF of an axis-aligned ellipsoid centred in the grid (semi-axes x, y, z in voxels).

    Approximate distance (r - 1) * min(axes), exact for a sphere; clipped at +-clamp voxels, / clamp.
    """
    c = np.arange(size) - (size - 1) / 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    ax, ay, az = axes_vox
    r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
    sdf = (r - 1.0) * min(axes_vox)
    return (np.clip(sdf, -clamp, clamp) / clamp).astype(np.float32)


def make_dataset(folder, n_seq: int = 2, n_frames: int = 3, size: int = 16, clamp: float = 8.0) -> Path:
    """A small SDF data set of growing ellipsoids (one sequence per shape)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seqs = []
    for i in range(n_seq):
        frames = [
            ellipsoid_sdf(size, (size * 0.25 * (1 + 0.2 * i), size * 0.2 * (1 + 0.1 * t), size * 0.18), clamp)
            for t in range(n_frames)
        ]
        write_sequence(folder / f"cell{i}.h5", frames, n_frames=n_frames, shape=(size,) * 3)
        seqs.append({"name": f"cell{i}", "file": f"cell{i}.h5", "frames": n_frames, "shape": [size] * 3})
    write_manifest(folder, new_manifest(size=size, clamp=clamp, voxel_size_um=0.5, scale_um_per_unit=clamp * 0.5,
                                        sequences=seqs))
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"))


def _params(run_dir):
    return {**load_file(str(run_dir / "model.safetensors")), **load_file(str(run_dir / "latents.safetensors"))}


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_config_yaml_round_trip(name, tmp_path):
    cfg = preset(name)
    assert from_yaml(to_yaml(cfg)) == cfg
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_config_errors_name_the_key(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("model:\n  hidden: [32, fast]\n")
    with pytest.raises(ConfigError, match=r"model.hidden\[1\]"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("sampling:\n  fraction: yes\n")
    with pytest.raises(ConfigError, match="sampling.fraction"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("model:\n  activation: tanh\n")
    with pytest.raises(ConfigError, match="model.activation"):
        load_config(tmp_path / "d.yaml")
    with pytest.raises(ConfigError, match="preset 'huge'"):
        preset("huge")
    # partial files fill in from the base; ints widen to floats
    (tmp_path / "e.yaml").write_text("train:\n  lr_net: 1\n  epochs: 7\n")
    cfg = load_config(tmp_path / "e.yaml", preset("tiny"))
    assert cfg.train.lr_net == 1.0 and isinstance(cfg.train.lr_net, float) and cfg.train.epochs == 7
    assert cfg.model == preset("tiny").model


# -- sampling -----------------------------------------------------------------------------------
def test_sample_frame_reference_scheme_proportions():
    sdf = ellipsoid_sdf(32, (8, 8, 8), 8)
    rng = np.random.default_rng(0)
    idx, val = sample_frame(sdf, 10000, near_fraction=0.7, near_threshold=0.3, rng=rng)
    assert idx.shape == val.shape == (10000,)
    np.testing.assert_array_equal(val, sdf.reshape(-1)[idx])
    assert np.sum(val <= 0.3) == 7000
    idx, val = sample_frame(sdf, 1000, scheme="band", band=0.1, near_fraction=0.5, rng=rng)
    assert np.sum(np.abs(val) <= 0.1) == 500


def test_schedule_and_shards_partition_every_global_batch(dataset):
    ds = SDFDataset(dataset)
    sampling = preset("tiny").sampling
    sampling.frames_per_step = 4
    one = PointPool(ds, sampling, seed=3)
    two = [PointPool(ds, sampling, seed=3, rank=r, world_size=2) for r in range(2)]
    batches = window_batches(6, 4, 3, 0)
    assert sorted(set(batches.ravel())) == list(range(6)) and batches.shape == (2, 4)
    steps_one = list(one.steps(0))
    steps_two = [list(p.steps(0)) for p in two]
    for s, (seq, times, idx, val) in enumerate(steps_one):
        seq2 = np.concatenate([steps_two[0][s][0], steps_two[1][s][0]])
        idx2 = np.concatenate([steps_two[0][s][2], steps_two[1][s][2]])
        order = np.r_[0:4:2, 1:4:2]  # rank r takes positions r, r + 2
        np.testing.assert_array_equal(seq[order], seq2)
        np.testing.assert_array_equal(idx[order], idx2)
    assert frame_time(0, 3) == -1 and frame_time(2, 3) == 1 and frame_time(0, 1) == 0
    xyz = index_to_coords(torch.tensor([0, 16 * 16 * 16 - 1, 1]), (16, 16, 16))
    torch.testing.assert_close(xyz, torch.tensor([[-1.0, -1, -1], [1, 1, 1], [-1 + 2 / 15, -1, -1]]))
    with pytest.raises(ConfigError, match="frames_per_step"):
        PointPool(ds, sampling, seed=0, rank=0, world_size=3)


class _FakeSeq:
    def __init__(self):
        self.shape, self.frames = (256, 256, 256), 30


class _FakeDataset:
    path = Path("reference-size")
    sequences = [_FakeSeq() for _ in range(33)]


def test_reference_size_point_pool_fits_under_8_gb():
    # 33 x 30 x 256^3 frames: the pool of sampled points, the only data held beyond one frame
    pool = PointPool(_FakeDataset(), preset("reference").sampling, seed=0)
    assert pool._cache is None  # 63 GB of frames are never cached
    assert pool.points_per_frame == round(0.03 * 256**3)
    frame_bytes = 4 * 256**3
    assert pool.pool_bytes + frame_bytes < 4 * 2**30
    with pytest.raises(ConfigError, match="ram_budget_gb"):
        cfg = preset("reference").sampling
        cfg.pool_dtype, cfg.fraction = "float32", 0.06
        PointPool(_FakeDataset(), cfg, seed=0)


# -- training -----------------------------------------------------------------------------------
SMOKE = {"sampling": {"fraction": 0.02, "points_per_frame": None}, "train": {"epochs": 1, "checkpoint_every": 1}}


@pytest.mark.parametrize("name", list(PRESETS))
def test_smoke_train_every_preset(name, dataset, tmp_path):
    out = train(dataset, tmp_path / name, preset=name, config=SMOKE, progress=False)
    run = load_run(out)
    assert run.config.preset == name
    assert run.names == ["cell0", "cell1"] and run.frames == [3, 3]
    assert run.latents.shape == (2, preset(name).model.latent_dim)
    eye = torch.eye(3).expand(2, 3, 3)
    assert run.config.train.rotations == (name in ("reference", "large"))
    torch.testing.assert_close(run.rotations @ run.rotations.transpose(1, 2), eye, atol=1e-5, rtol=0)
    if not run.config.train.rotations:
        torch.testing.assert_close(run.rotations, eye)
    assert run.manifest["clamp"] == 8.0 and run.version
    assert not run.decoder.training
    with torch.no_grad():
        sdf = run.field(0)(torch.zeros(5, 4))
    assert sdf.shape == (5,) and torch.isfinite(sdf).all()
    assert (out / "loss.png").is_file() and (out / "log.csv").read_text().count("\n") == 2
    assert len(list_checkpoints(out)) == 1


def test_training_reduces_loss_and_learns_inside(dataset, tmp_path):
    cfg = {"sampling": {"fraction": 0.1}, "train": {"epochs": 40, "checkpoint_every": 40, "lr_step_net": 100, "lr_step_codes": 100}}
    out = train(dataset, tmp_path / "r", preset="tiny", config=cfg, progress=False)
    rows = (out / "log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert losses[-1] < 0.5 * losses[0]
    run = load_run(out)
    with torch.no_grad():
        inside = run.field(0)(torch.tensor([[0.0, 0.0, 0.0, 0.0]]))
        outside = run.field(0)(torch.tensor([[0.95, 0.95, 0.95, 0.0]]))
    assert inside.item() < 0 < outside.item()


def test_resume_equals_uninterrupted_and_skips_corrupted_checkpoint(dataset, tmp_path):
    # cache_gb 0: frames are re-read from HDF5 at every resampling window (the large-data path)
    cfg = {"sampling": {"fraction": 0.03, "resample_every": 2, "cache_gb": 0.0},
           "train": {"epochs": 5, "checkpoint_every": 1}}
    full = train(dataset, tmp_path / "full", preset="tiny", config=cfg, rotations=True, seed=4, progress=False)
    part = train(dataset, tmp_path / "part", preset="tiny", config={**cfg, "train": {"epochs": 3, "checkpoint_every": 1}},
                 rotations=True, seed=4, progress=False)
    # the newest checkpoint is damaged (a crash while copying the run, say): resume falls back to epoch 2
    newest = list_checkpoints(part)[0][1]
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupted"):
        train(dataset, part, epochs=5, resume=True, progress=False)
    a, b = _params(full), _params(part)
    assert a.keys() == b.keys() and "rotation_params" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = (part / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]


def test_resume_errors(dataset, tmp_path):
    out = train(dataset, tmp_path / "r", preset="tiny", config=SMOKE, progress=False)
    with pytest.raises(RunError, match="model.activation"):
        train(dataset, out, preset="tiny", config=SMOKE, activation="relu", resume=True, progress=False)
    with pytest.raises(RunError, match="seed"):
        train(dataset, out, seed=9, resume=True, progress=False)
    other = make_dataset(tmp_path / "other", n_seq=3)
    with pytest.raises(RunError, match="different data set"):
        train(other, out, resume=True, progress=False)
    with pytest.raises(RunError, match="no run folder"):
        train(dataset, tmp_path / "nothing", resume=True, progress=False)
    with pytest.raises(OutputExistsError):
        train(dataset, out, preset="tiny", config=SMOKE, progress=False)
    for _, path in list_checkpoints(out):
        path.write_bytes(b"garbage")
    with pytest.raises(RunError, match="none of the"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(dataset, out, resume=True, progress=False)


def test_bad_data_and_device(dataset, tmp_path):
    with pytest.raises(DatasetError, match="no manifest"):
        train(tmp_path, tmp_path / "o1", preset="tiny", progress=False)
    bad = make_dataset(tmp_path / "nan", n_seq=1, n_frames=2)
    frames = [ellipsoid_sdf(16, (4, 4, 4), 8) for _ in range(2)]
    frames[1][3, 4, 5] = np.nan
    write_sequence(bad / "cell0.h5", frames, n_frames=2, shape=(16, 16, 16))
    with pytest.raises(DatasetError, match="NaN or Inf"):
        train(bad, tmp_path / "o2", preset="tiny", progress=False)
    (bad / "cell0.h5").unlink()
    with pytest.raises(DatasetError, match="missing sequence files"):
        train(bad, tmp_path / "o3", preset="tiny", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="cuda"):
            train(dataset, tmp_path / "o4", preset="tiny", device="cuda", progress=False)
    with pytest.raises(ConfigError, match="train.nope"):
        train(dataset, tmp_path / "o5", preset="tiny", config={"train": {"nope": 1}}, progress=False)


def test_load_run_errors(tmp_path):
    with pytest.raises(RunError, match="not found"):
        load_run(tmp_path / "missing")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(to_yaml(preset("tiny")))
    with pytest.raises(RunError, match="incomplete run folder"):
        load_run(tmp_path / "r")


def test_cli_train(dataset, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sampling:\n  fraction: 0.02\ntrain:\n  epochs: 1\n")
    assert main(["train", str(dataset), "--out", str(tmp_path / "r"), "--preset", "tiny", "--config", str(cfg),
                 "--rotations", "--activation", "relu", "--device", "cpu", "--seed", "2"]) == 0
    run = load_run(tmp_path / "r")
    assert run.config.model.activation == "relu" and run.config.train.rotations
    assert json.loads((tmp_path / "r" / "run.json").read_text())["seed"] == 2
    assert main(["train", str(dataset), "--out", str(tmp_path / "r"), "--preset", "tiny"]) == 2
    assert "output exists" in capsys.readouterr().err
    assert main(["train", str(dataset), "--out", str(tmp_path / "r"), "--resume", "--epochs", "2"]) == 0
    assert load_run(tmp_path / "r").info["epochs"] == 2


# -- data parallel ------------------------------------------------------------------------------
def _relative_difference(a: dict, b: dict) -> float:
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a)
    den = sum(float((a[k].double() ** 2).sum()) for k in a)
    return (num / den) ** 0.5


def _ddp_runs(dataset, out, half: int, full: int, kwargs: dict) -> None:
    """In each of the processes: an uninterrupted run to ``full`` epochs, and one to ``half`` then resumed."""
    import torch.distributed as dist

    dist.init_process_group("gloo")  # once for all three calls (train then neither joins nor leaves)
    try:
        train(dataset, out / "ddp", epochs=full, **kwargs)
        train(dataset, out / "resumed", epochs=half, **kwargs)
        train(dataset, out / "resumed", resume=True, epochs=full, device="cpu", progress=False)
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes_match_single_process(dataset, tmp_path):
    """1 and 2 processes add the same per-frame gradients in the same order: identical runs, also resumed."""
    from cellinr.training.distributed import launch_local

    cfg = {"sampling": {"fraction": 0.03, "frames_per_step": 2}, "train": {"checkpoint_every": 2}}
    kwargs = dict(preset="tiny", config=cfg, rotations=True, device="cpu", seed=1, progress=False)
    single = train(dataset, tmp_path / "single", epochs=4, **kwargs)
    launch_local(2, _ddp_runs, dataset, tmp_path, 2, 4, kwargs, threads=1)
    a = _params(single)
    assert (a["latents"] - _initial("latents")).abs().max().item() > 1e-3  # training moved the codes
    for other in ("ddp", "resumed"):
        assert load_run(tmp_path / other).info["world_size"] == 2
        b = _params(tmp_path / other)
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    log_a = (single / "log.csv").read_text().splitlines()
    log_c = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert [r.split(",")[:4] for r in log_a] == [r.split(",")[:4] for r in log_c]


@pytest.mark.slow
def test_ddp_matches_single_process_over_30_small_epochs(tmp_path):
    """The chaotic 30-epoch ``small`` run (a 1e-7 change grows to ~0.4): 1 process == 2 processes == 2 resumed."""
    from cellinr.training.distributed import launch_local

    data = make_dataset(tmp_path / "ds", n_seq=4, n_frames=6, size=24)
    kwargs = dict(preset="small", device="cpu", seed=0, progress=False, config={"train": {"checkpoint_every": 5}})
    single = train(data, tmp_path / "single", epochs=30, **kwargs)
    launch_local(2, _ddp_runs, data, tmp_path, 15, 30, kwargs, threads=1)
    a = _params(single)
    for other in ("ddp", "resumed"):
        diff = _relative_difference(a, _params(tmp_path / other))
        print(f"relative difference of the final weights, 1 process vs 2 ({other}): {diff:.3g}")
        assert diff < 1e-3


def _initial(key):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        from cellinr.training.shape import ShapeModel

        cfg = preset("tiny")
        cfg.train.rotations = True
        return ShapeModel(cfg, 2).latents.weight.detach()


# -- the authors' sdf_vid files, used directly -------------------------------------------------------------
def _authors_sdf_folder(folder, n_files=2, frames=3, edge=20):
    """sdf_vid files as the authors' MATLAB writes them: h5py sees (X, Y, Z, T), chunks of one frame."""
    import h5py

    folder.mkdir(parents=True)
    c = np.arange(edge) - (edge - 1) / 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    for i in range(n_files):
        sdf = np.stack([(np.sqrt((z / (1 + 0.1 * i)) ** 2 + y**2 + (x / (1 + 0.1 * t)) ** 2) - 5) / 32
                        for t in range(frames)]).astype(np.float32)
        with h5py.File(folder / f"cell_{i:02d}.h5", "w") as f:
            data = sdf.transpose(3, 2, 1, 0)
            f.create_dataset("sdf_vid", data=data, chunks=(*data.shape[:3], 1), compression="gzip")
    return folder


def test_train_and_info_take_a_folder_of_the_authors_sdf_vid_files(tmp_path, caplog, capsys, monkeypatch):
    import logging

    from cellinr._util.cache import cache_entry
    from cellinr.summary import describe

    monkeypatch.setenv("CELLINR_CACHE", str(tmp_path / "cache"))

    folder = _authors_sdf_folder(tmp_path / "authors")
    text = describe(folder)
    assert "folder of 2 sdf_vid files" in text and "cell_00.h5: 3 frames of (20, 20, 20)" in text
    with caplog.at_level(logging.WARNING):
        run = train(folder, tmp_path / "run", preset="tiny", epochs=1, device="cpu", progress=False)
    assert "2 sdf_vid files of the authors; preparing them once into" in caplog.text
    data = SDFDataset(cache_entry("sdf_vid", folder))  # in the cache: never inside the input or the run
    assert str(data.path).startswith(str(tmp_path / "cache")) and not (run / "data").exists()
    assert data.names == ["cell_00", "cell_01"] and data.sequences[0].frames == 3
    assert load_run(run).names == ["cell_00", "cell_01"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(folder, tmp_path / "run", preset="tiny", epochs=1, device="cpu", progress=False, overwrite=True)
    assert "using the data set prepared before" in caplog.text
    assert main(["train", str(folder), "--out", str(tmp_path / "run"), "--preset", "tiny"]) == 2
    assert "output exists" in capsys.readouterr().err
    assert main(["train", str(folder), "--out", str(tmp_path / "run"), "--resume", "--epochs", "2"]) == 0
    assert main(["info", str(folder)]) == 0
    assert "sdf_vid files" in capsys.readouterr().out
    assert main(["prepare", str(folder), "--out", str(tmp_path / "prepared"), "--size", "20"]) == 0  # the folder too
    assert SDFDataset(tmp_path / "prepared").names == ["cell_00", "cell_01"]


def test_rotation_init_principal_aligns_rotated_copies_before_training(tmp_path):
    """``train.rotation_init: principal``: the start rotations map every copy onto sequence 0."""
    from cellinr.nn.rotation import rotation_angle

    size, clamp = 20, 8.0
    c = np.arange(size) - (size - 1) / 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    p = np.stack([x.ravel(), y.ravel(), z.ravel()], 1) / ((size - 1) / 2)
    a = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z

    def shape(q):  # ellipsoid with a bump: no symmetry
        e = np.sqrt(((q / np.array([0.7, 0.45, 0.3])) ** 2).sum(1)) - 1
        b = np.linalg.norm(q - np.array([0.5, 0.25, 0.1]), axis=1) - 0.25
        return (np.clip(np.minimum(e, b) * (size - 1) / 2, -clamp, clamp) / clamp).reshape(size, size, size)

    seqs, folder = [], tmp_path / "data"
    folder.mkdir()
    for i, rot in enumerate((np.eye(3), a)):
        write_sequence(folder / f"c{i}.h5", [shape(p @ rot).astype(np.float32)] * 2, n_frames=2, shape=(size,) * 3)
        seqs.append({"name": f"c{i}", "file": f"c{i}.h5", "frames": 2, "shape": [size] * 3})
    write_manifest(folder, new_manifest(size=size, clamp=clamp, voxel_size_um=0.5, scale_um_per_unit=4.0,
                                        sequences=seqs))
    cfg = {"train": {"epochs": 1, "rotation_epochs": 0, "rotation_init": "principal", "checkpoint_every": 1}}
    run = load_run(train(folder, tmp_path / "run", preset="tiny", config=cfg, rotations=True, progress=False))
    r = run.rotations.double()
    torch.testing.assert_close(r[0], torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    # copy 1 shows S(A^T x): R_1 A = R_0 = I
    assert float(rotation_angle(r[1] @ torch.as_tensor(a))) < np.radians(4)
    # the reference's start: the identity (rotations frozen from epoch 0, so they stay there)
    cfg["train"]["rotation_init"] = "identity"
    ident = load_run(train(folder, tmp_path / "ident", preset="tiny", config=cfg, rotations=True, progress=False))
    torch.testing.assert_close(ident.rotations, torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)
    # resuming never realigns: the checkpoint's rotations continue, and the key may differ
    train(folder, tmp_path / "ident", epochs=2, resume=True, progress=False)
    torch.testing.assert_close(load_run(tmp_path / "ident").rotations, ident.rotations, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="rotation_init"):
        train(folder, tmp_path / "bad", preset="tiny", config={"train": {"rotation_init": "nonsense"}}, progress=False)


def test_rotation_init_refuses_a_sequence_without_inside_voxels(tmp_path):
    size = 12
    full = np.full((size,) * 3, 0.5, np.float32)
    inside = full.copy()
    inside[4:8, 4:8, 4:8] = -0.5
    seqs, folder = [], tmp_path / "data"
    folder.mkdir()
    for name, frame in (("cell", inside), ("empty", full)):
        write_sequence(folder / f"{name}.h5", [frame], n_frames=1, shape=(size,) * 3)
        seqs.append({"name": name, "file": f"{name}.h5", "frames": 1, "shape": [size] * 3})
    write_manifest(folder, new_manifest(size=size, clamp=4.0, voxel_size_um=0.5, scale_um_per_unit=2.0,
                                        sequences=seqs))
    with pytest.raises(DatasetError, match="empty.h5: no voxel inside"):
        train(folder, tmp_path / "run", preset="tiny", rotations=True, progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.incomplete").exists()


def test_compile_auto_threshold_and_devices():
    from cellinr._util.device import COMPILE_MIN_STEPS, resolve_compile

    assert resolve_compile("on", torch.device("cpu"), 1) and not resolve_compile("off", torch.device("cuda"), 10**6)
    assert resolve_compile("auto", torch.device("cuda"), COMPILE_MIN_STEPS)
    assert not resolve_compile("auto", torch.device("cuda"), COMPILE_MIN_STEPS - 1)
    assert not resolve_compile("auto", torch.device("mps"), 10**6)


@pytest.mark.skipif(not any(__import__("shutil").which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_learns_like_eager(dataset, tmp_path):
    cfg = {"sampling": {"fraction": 0.05}, "train": {"epochs": 3, "checkpoint_every": 3}}
    runs = {mode: train(dataset, tmp_path / mode, preset="tiny", seed=1, progress=False,
                        config={**cfg, "train": {**cfg["train"], "compile": mode}}) for mode in ("off", "on")}
    losses = {m: [float(r.split(",")[1]) for r in (p / "log.csv").read_text().splitlines()[1:]] for m, p in runs.items()}
    np.testing.assert_allclose(losses["on"], losses["off"], rtol=1e-4)
    assert json.loads((runs["on"] / "run.json").read_text())["compiled"] is True
    assert json.loads((runs["off"] / "run.json").read_text())["compiled"] is False


def test_failed_compilation_warns_and_trains_uncompiled(dataset, tmp_path, monkeypatch, caplog):
    def broken(fn, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    out = train(dataset, tmp_path / "r", preset="tiny", progress=False, config={"train": {"compile": "on"}})
    assert json.loads((out / "run.json").read_text())["compiled"] is False
    assert "training uncompiled" in caplog.text
