"""Training the shape model: auto-decoder, latent codes and per-sequence rotations.

Loss per step (Wiesner et al.; DeepSDF): ``mean |clamp(f(z_s, R_s x, t)) - clamp(sdf)| +
lambda * w(epoch) * mean_frames ||z_s||`` with the regulariser weight warmed up linearly,
``w = min(1, (epoch + 1) / code_reg_warmup)``. Three Adam optimisers (network, codes, rotations),
each with its own learning rate and step schedule; rotations are optimised during the first
``rotation_epochs`` epochs and frozen afterwards.

A run is resumable: checkpoints (:mod:`cellinr.training.checkpoint`) hold everything the loop
depends on, and the training data of each step are a pure function of (seed, epoch) (see
:mod:`cellinr.training.sampling`), so a resumed run ends with exactly the parameters of an
uninterrupted one (same device and thread count). Each step's gradient is summed frame by frame in
the global batch order (:func:`cellinr.training.distributed.ordered_gradients`), so a run on N
processes (torchrun) follows the same optimisation as on one.

With ``train.augment`` the code table also holds augmented copies of the sequences
(:mod:`cellinr.training.augmentation`): each step maps a frame's points to the version it trains
this epoch. With ``train.compile`` the network's evaluation runs through ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cellinr._util.device import resolve_compile, resolve_precision
from cellinr.errors import CellinrError, RunError
from cellinr.model.config import Config, config_from_dict, load_config, validate
from cellinr.model.config import preset as get_preset
from cellinr.nn.decoder import AutoDecoder
from cellinr.nn.rotation import RotationTable
from cellinr.training import checkpoint as ckpt
from cellinr.training import dataset_checks as checks
from cellinr.training import distributed as dist_utils
from cellinr.training.augmentation import augmentation
from cellinr.training.loss import code_regulariser, eikonal_term, regulariser_weight, sdf_l1
from cellinr.training.sampling import PointPool, index_to_coords

log = logging.getLogger(__name__)

LOG_COLUMNS = ("epoch", "loss", "l1", "reg", "lr_net", "lr_codes", "lr_rotations", "seconds")


class ShapeModel(nn.Module):
    """Decoder, latent table and (optionally) rotation table: the trainable parameters of a run."""

    def __init__(self, config: Config, n_sequences: int):
        super().__init__()
        m = config.model
        self.decoder = AutoDecoder.from_config(m)
        self.latents = nn.Embedding(n_sequences, m.latent_dim)
        nn.init.normal_(self.latents.weight, 0.0, m.latent_init_std / m.latent_dim**0.5)
        self.rotations = RotationTable(n_sequences, config.train.rotation_param) if config.train.rotations else None

    def rotation_matrices(self) -> torch.Tensor:
        n = self.latents.num_embeddings
        if self.rotations is None:
            return torch.eye(3, device=self.latents.weight.device).expand(n, 3, 3)
        return self.rotations()

    def forward(self, seq: torch.Tensor, times: torch.Tensor, xyz: torch.Tensor):
        """``seq`` (b,), ``times`` (b,), ``xyz`` (b, n, 3) -> (prediction (b, n), codes (b, L))."""
        codes = self.latents(seq)
        if self.rotations is not None:
            xyz = xyz @ self.rotations(seq).transpose(1, 2)
        t = times[:, None, None].expand(*xyz.shape[:2], 1)
        return self.decoder.forward_frames(codes, torch.cat([xyz, t], dim=-1)), codes


def _data_fingerprint(dataset) -> dict:
    return {
        "names": dataset.names,
        "frames": [s.frames for s in dataset.sequences],
        "shapes": [list(s.shape) for s in dataset.sequences],
    }


def _compat_dict(config: Config) -> dict:
    """What must not change when resuming (all but epochs, checkpoint cadence, memory limits and the
    start of the rotations)."""
    d = config.to_dict()
    # rotation_init acts before the first epoch only (a checkpoint holds the rotations)
    # compile changes no result beyond rounding
    for key in ("epochs", "checkpoint_every", "keep_checkpoints", "rotation_init", "compile"):
        d["train"].pop(key)
    for key in ("ram_budget_gb", "cache_gb"):
        d["sampling"].pop(key)
    d.pop("preset")
    return d


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def _resolve_config(preset, config, epochs, activation, rotations, augment=None) -> Config:
    base = get_preset(preset or "small")
    if config is None:
        cfg = base
    elif isinstance(config, Config):
        cfg = validate(config)
    elif isinstance(config, dict):
        cfg = config_from_dict(config, base)
    else:
        cfg = load_config(config, base)
    return _apply_overrides(cfg, epochs, activation, rotations, augment)


def _checked_config(dataset, preset, config, epochs, activation, rotations, augment=None) -> Config:
    """The resolved config, its rotations checked against the data set (one sequence: none to learn)."""
    cfg = _resolve_config(preset, config, epochs, activation, rotations, augment)
    asked = checks.rotations_asked(preset, config, rotations)
    flag = "--rotations" if rotations else "train.rotations"
    return checks.rotations_for(cfg, len(dataset), dataset.path, asked=asked, flag=flag)


def _apply_overrides(cfg: Config, epochs, activation, rotations, augment=None) -> Config:
    """Apply the command-line overrides (None: keep the config's value) and validate."""
    if epochs is not None:
        cfg.train.epochs = int(epochs)
    if activation is not None:
        cfg.model.activation = activation
    if rotations is not None:
        cfg.train.rotations = bool(rotations)
    if augment is not None:
        cfg.train.augment = int(augment)
    return validate(cfg)


def _plot_loss(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cellinr._util.atomic import atomic_path

    if not rows:
        return
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ep = [int(r["epoch"]) for r in rows]
    for key in ("loss", "l1"):
        ax.plot(ep, [float(r[key]) for r in rows], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)


def _read_log(path: Path, max_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    from cellinr._util.schema import read_csv_rows

    rows = read_csv_rows(path, columns={"epoch": int}, error=RunError)
    return [r for r in rows if int(r["epoch"]) <= max_epoch]


def _write_log(path: Path, rows: list[dict]) -> None:
    from cellinr._util.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


def _precision_context(device: torch.device, precision: str):
    if device.type == "cpu" and precision == "bf16":
        return lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return lambda: torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext


def train(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str | None = None,
    config: Config | dict | str | os.PathLike | None = None,
    epochs: int | None = None,
    activation: str | None = None,
    rotations: bool | None = None,
    augment: int | None = None,
    device: str = "auto",
    seed: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Train a shape model on a prepared SDF data set; returns the run folder.

    Parameters
    ----------
    dataset_dir : folder of a prepared SDF data set (``manifest.json`` + HDF5 sequences), or a folder
        of the authors' ``sdf_vid`` files, prepared once into the user's cache (and reused from there; see
        :func:`cellinr.data.reference_data.prepare_reference_folder`).
    out : run folder to create (or to continue with ``resume``).
    preset : ``reference``, ``small`` (default for new runs), ``small-smooth``, ``small-v1``, ``large`` or ``tiny``
        (cellinr.model.config.PRESETS).
    config : a Config, a nested dict or a YAML file; its keys override the preset.
    epochs, activation, rotations, augment : override ``train.epochs``, ``model.activation``,
        ``train.rotations``, ``train.augment`` (augmented copies per sequence).
    device : ``auto``, ``cpu``, ``cuda`` or ``mps``; under torchrun each process uses GPU LOCAL_RANK.
    seed : run seed (default 0); the same seed gives the same run.
    resume : continue the run in ``out`` from its newest readable checkpoint. The saved config is
        used; given options may only change ``train.epochs`` (anything else: RunError).
    overwrite : replace the run files in an existing ``out``.
    progress : show a progress bar (default: when on a terminal).

    Raises
    ------
    DatasetError : data set missing, incomplete, or with NaN/Inf values.
    ConfigError : bad config keys or values.
    RunError : ``resume`` on a missing or incompatible run.
    DeviceError : an explicitly requested device is not available.
    OutputExistsError : ``out`` holds files and neither ``resume`` nor ``overwrite`` is given.
    """
    from cellinr._util.device import resolve_device
    from cellinr._util.outputs import abandon_run, check_no_overlap, incomplete_dir
    from cellinr.io.sdf_dataset import SDFDataset

    out = Path(out)
    device = resolve_device(device)
    info, device = dist_utils.init_distributed(device)
    existed = incomplete_dir(out).exists()
    # the loop restores the run's RNG state on resume: keep it from outliving the call
    forked = [device.index or 0] if device.type == "cuda" else []
    try:
        dataset = SDFDataset(_reference_data(Path(dataset_dir), out, info, resume=resume, overwrite=overwrite,
                                             progress=progress))
        check_no_overlap([Path(dataset_dir), dataset.path, config if isinstance(config, (str, os.PathLike)) else None],
                         [out, incomplete_dir(out)])
        with torch.random.fork_rng(devices=forked):
            return _train(
                dataset, out, info=info, device=device, preset=preset, config=config, epochs=epochs,
                activation=activation, rotations=rotations, augment=augment, seed=seed, resume=resume,
                overwrite=overwrite, progress=progress,
            )
    except BaseException:
        if info.is_main and not existed:  # failed before its first checkpoint: leave nothing, a retry runs
            abandon_run(incomplete_dir(out), progress=ckpt.CHECKPOINT_DIR)
        raise
    finally:
        dist_utils.cleanup(info)


def _train(dataset, out: Path, *, info, device, preset, config, epochs, activation, rotations, augment, seed, resume,
           overwrite, progress) -> Path:
    from cellinr._util.outputs import begin_run, finish_run, incomplete_dir

    fingerprint = _data_fingerprint(dataset)
    state = None
    # the run is built in the hidden folder .<name>.incomplete and moved onto ``out`` when finished
    final, work = out, incomplete_dir(out)
    if resume:
        src = work if work.is_dir() else out  # an interrupted run, or a finished one to continue
        if not src.is_dir():
            raise RunError(f"{out}: no run folder to resume")
        if not (src / "config.yaml").is_file():
            raise RunError(f"{src}: not a run folder (no config.yaml)")
        cfg_saved = load_config(src / "config.yaml")
        if ckpt.list_checkpoints(src):
            ckpt_path, state = ckpt.load_latest(src, map_location="cpu")
            if ckpt_path != ckpt.list_checkpoints(src)[0][1]:
                log.warning("%s: resuming from the older checkpoint %s", src, ckpt_path.name)
        else:
            log.info("%s: killed before its first checkpoint; training from the first epoch", src)
        if preset is None and config is None:  # the saved config: only an explicit --rotations is checked
            cfg = _apply_overrides(cfg_saved, epochs, activation, rotations, augment)
            cfg = checks.rotations_for(cfg, len(dataset), dataset.path, asked=True) if rotations else cfg
        else:
            cfg = _checked_config(dataset, preset, config, epochs, activation, rotations, augment)
        diff = _diff_keys(_compat_dict(cfg), _compat_dict(cfg_saved)) + (_diff_keys(
            _compat_dict(cfg), state.get("compat", {}).get("config", {})
        ) if state is not None else [])
        if diff:
            raise RunError(f"{out}: cannot resume: the config differs from the run's in {', '.join(sorted(set(diff)))}")
        if state is not None and state.get("compat", {}).get("data") != fingerprint:
            raise RunError(f"{out}: cannot resume: the run was trained on a different data set (names/frames/shape)")
        run_seed = int(state["seed"]) if state is not None else (0 if seed is None else int(seed))
        if seed is not None and int(seed) != run_seed:
            raise RunError(f"{out}: cannot resume: the run used seed {run_seed}, not {seed}")
    else:
        cfg = _checked_config(dataset, preset, config, epochs, activation, rotations, augment)
        run_seed = 0 if seed is None else int(seed)
        checks.check_cell_size(dataset)  # a new run only: a resumed one was checked when it began
    error = None
    if info.is_main:  # every check is done: only now is anything created
        try:
            if resume:
                begin_run(out, resume=True, overwrite=False, done="run.json", progress=ckpt.CHECKPOINT_DIR)
            else:
                _prepare_out(out, cfg, dataset, overwrite)
        except CellinrError as exc:
            error = exc
    dist_utils.share_error(error, info)
    out = work
    dist_utils.barrier(info)

    tc = cfg.train
    n_seq = len(dataset)
    if state is None:  # the run's own random stream (inside train's fork_rng): checkpoints are reproducible
        torch.manual_seed(run_seed)
    aug = augmentation(n_seq, tc.augment, scale=tc.augment_scale, mirror=tc.augment_mirror, seed=run_seed,
                       original_share=tc.augment_original_share)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run_seed)
        model = ShapeModel(cfg, aug.rows)
    if state is None and model.rotations is not None and tc.rotation_init == "principal":
        from cellinr.training.rotation_init import principal_rotations

        start = principal_rotations(dataset, info)
        # a copy y = s R_a M x starts from its original's alignment with R_a undone (the mirror stays)
        start = [start[r % n_seq] @ aug.rotations[r].T for r in range(aug.rows)]
        model.rotations.set_matrices(torch.as_tensor(np.asarray(start), dtype=torch.float32))
    model.to(device)
    precision = resolve_precision(tc.precision, device)  # "auto": bf16-hidden on CPUs with native bf16
    if precision == "bf16-hidden":  # the hidden layers' products in bf16 (AutoDecoder._low_addmm)
        model.decoder.hidden_dtype = torch.bfloat16
    opt_net = torch.optim.Adam(model.decoder.parameters(), lr=tc.lr_net)
    opt_codes = torch.optim.Adam(model.latents.parameters(), lr=tc.lr_codes)
    optimisers = {"net": opt_net, "codes": opt_codes}
    if model.rotations is not None:
        optimisers["rotations"] = torch.optim.Adam(model.rotations.parameters(), lr=tc.lr_rotations)
    steps = {"net": tc.lr_step_net, "codes": tc.lr_step_codes, "rotations": tc.lr_step_rotations}
    schedulers = {
        k: torch.optim.lr_scheduler.StepLR(o, step_size=steps[k], gamma=tc.lr_gamma) for k, o in optimisers.items()
    }
    use_scaler = device.type == "cuda" and tc.precision == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
    autocast = _precision_context(device, precision)
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        for k, o in optimisers.items():
            o.load_state_dict(state["optimisers"][k])
            schedulers[k].load_state_dict(state["schedulers"][k])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch = int(state["epoch"])
        log.info("resuming %s at epoch %d", out, start_epoch)

    pool = PointPool(dataset, cfg.sampling, seed=run_seed, rank=info.rank, world_size=info.world_size)
    # decided on the whole run's length, so a resumed run compiles exactly when the uninterrupted one did
    compiled = resolve_compile(tc.compile, device, len(pool) * tc.epochs)
    if compiled:
        compiled = _compile_decoder(model.decoder, device, pool.points_per_frame)
    shape = pool.shape
    # d(coordinate)/d(voxel) per axis (x, y, z) times the clamp (voxels per SDF unit): the factor
    # that makes the gradient of a true distance norm 1
    voxel_gradient = torch.tensor([float(dataset.manifest["clamp"]) * 2.0 / max(n - 1, 1) for n in shape[::-1]],
                                  device=device)
    eik_stride = max(1, pool.points_per_frame // max(1, int(tc.eikonal_points)))
    if info.is_main:
        log.info(
            "training %d sequences, %d frames, %d points per frame, %d steps per epoch, pool %.1f MB",
            n_seq, len(pool.frames), pool.points_per_frame, len(pool), pool.pool_bytes / 2**20,
        )
    # every process starts from process 0's parameters; steps are summed frame by frame in the global
    # batch order (cellinr.training.distributed.ordered_gradients), so 1 and N processes train alike
    dist_utils.broadcast_parameters(model, info)
    dense_params = [p for n, p in model.named_parameters() if not n.startswith("latents.")]

    rows = _read_log(out / "log.csv", start_epoch) if info.is_main else []
    if info.is_main and state is not None:
        _write_log(out / "log.csv", rows)

    tf32_before = torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda" and tc.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
    bar = None
    if info.is_main:
        from cellinr._util.progress import tqdm

        bar = tqdm(
            total=tc.epochs, initial=min(start_epoch, tc.epochs), unit="epoch", desc="train",
            disable=(None if progress is None else not progress), dynamic_ncols=True,
        )
    try:
        for epoch in range(start_epoch, tc.epochs):
            t0 = time.perf_counter()
            model.train()
            reg_weight = regulariser_weight(tc.code_reg, epoch, tc.code_reg_warmup)
            rot_active = model.rotations is not None and epoch < tc.rotation_epochs
            totals = torch.zeros(3, device=device)  # summed on the device: no host sync per step
            n_steps = 0
            for seq, times, index, value in pool.steps(epoch):
                seq = aug.rows_of(seq, epoch)  # the version (original or copy) each frame trains this epoch
                seq_t = torch.from_numpy(seq).to(device)
                times_t = torch.from_numpy(times).to(device)
                xyz = index_to_coords(torch.from_numpy(index).to(device), shape)
                target = torch.from_numpy(value).to(device=device, dtype=torch.float32)
                xyz, target = aug.apply(seq_t, xyz, target)
                model.zero_grad(set_to_none=True)
                global_frames = len(seq) * info.world_size

                def frame_terms(j, seq_t=seq_t, times_t=times_t, xyz=xyz, target=target, seq=seq,
                                reg_weight=reg_weight, global_frames=global_frames):
                    with autocast():
                        pred, codes = model(seq_t[j:j + 1], times_t[j:j + 1], xyz[j:j + 1])
                    l1 = sdf_l1(pred, target[j:j + 1], tc.clamp, tc.clamp_mode, tc.far_weight)
                    reg = reg_weight * code_regulariser(codes)
                    loss = (l1 + reg) / global_frames
                    if tc.eikonal_weight:  # a second, eager pass on a subset: double backward on a few points only
                        sub = xyz[j:j + 1, ::eik_stride].detach().requires_grad_(True)
                        with autocast(), _eager(model.decoder):  # compiled graphs have no double backward
                            pred_sub, _ = model(seq_t[j:j + 1], times_t[j:j + 1], sub)
                        eik = eikonal_term(pred_sub, sub, target[j:j + 1, ::eik_stride], voxel_gradient, tc.clamp)
                        loss = loss + tc.eikonal_weight * eik / global_frames
                    return dist_utils.FrameTerms(
                        loss=scaler.scale(loss) if scaler is not None else loss, codes=codes, seq=int(seq[j]),
                        logged=torch.stack([l1 + reg, l1, reg]) / global_frames,
                    )

                logged = dist_utils.ordered_gradients(frame_terms, len(seq), params=dense_params,
                                                      code_table=model.latents.weight, info=info)
                active = [optimisers["net"], optimisers["codes"]] + ([optimisers["rotations"]] if rot_active else [])
                if tc.grad_clip is not None:
                    if scaler is not None:
                        scaler.unscale_(opt_net)
                    torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), tc.grad_clip)
                for o in active:
                    if scaler is not None:
                        scaler.step(o)
                    else:
                        o.step()
                if scaler is not None:
                    scaler.update()
                totals += logged
                n_steps += 1
            for s in schedulers.values():
                s.step()
            totals = (totals / max(1, n_steps)).cpu()  # the global batch's values, equal on every process
            done = epoch + 1
            if not torch.isfinite(totals).all():
                raise RunError(
                    f"{out}: training diverged in epoch {done} (loss is not finite); lower the learning rates "
                    "(train.lr_net, train.lr_codes) or enable train.grad_clip"
                )
            if info.is_main:
                row = {
                    "epoch": done, "loss": f"{totals[0].item():.6g}", "l1": f"{totals[1].item():.6g}",
                    "reg": f"{totals[2].item():.6g}", "lr_net": f"{opt_net.param_groups[0]['lr']:.6g}",
                    "lr_codes": f"{opt_codes.param_groups[0]['lr']:.6g}",
                    "lr_rotations": f"{optimisers['rotations'].param_groups[0]['lr']:.6g}" if "rotations" in optimisers else "",
                    "seconds": f"{time.perf_counter() - t0:.3f}",
                }
                rows.append(row)
                with open(out / "log.csv", "a", newline="", encoding="utf-8") as f:
                    csv.DictWriter(f, fieldnames=LOG_COLUMNS).writerow(row)
                bar.set_postfix(loss=f"{totals[0].item():.4g}", l1=f"{totals[1].item():.4g}")
                bar.update(1)
                if done % tc.checkpoint_every == 0 or done == tc.epochs:
                    _save_state(out, done, model, optimisers, schedulers, scaler, cfg, fingerprint, run_seed, tc)
                    _plot_loss(rows, out / "loss.png")
            dist_utils.barrier(info)
    finally:
        if bar is not None:
            bar.close()
        torch.backends.cuda.matmul.allow_tf32 = tf32_before

    if info.is_main:
        from cellinr.model.run import write_run_files

        if not ckpt.list_checkpoints(out) or ckpt.list_checkpoints(out)[0][0] < max(start_epoch, tc.epochs):
            _save_state(out, max(start_epoch, tc.epochs), model, optimisers, schedulers, scaler, cfg, fingerprint,
                        run_seed, tc)
        _plot_loss(rows, out / "loss.png")
        with torch.no_grad():
            write_run_files(
                out, config=cfg, decoder=model.decoder, latents=model.latents.weight,
                rotations=model.rotation_matrices(), names=aug.names(dataset.names),
                frames=[s.frames for s in dataset.sequences] * (aug.copies + 1), manifest=dataset.manifest,
                rotation_params=None if model.rotations is None else model.rotations.weight,
                info={
                    "epochs": max(start_epoch, tc.epochs), "seed": run_seed, "shape": list(shape),
                    "dataset": str(dataset.path), "world_size": info.world_size, "device": device.type, "precision": precision,
                    "compiled": bool(compiled),
                    **({"augment": aug.record(tc.augment_scale, tc.augment_mirror)} if aug.copies else {}),
                    "final_loss": float(rows[-1]["loss"]) if rows else None,
                },
            )
        finish_run(work, final)
    dist_utils.barrier(info)
    return final


@contextlib.contextmanager
def _eager(decoder):
    """The decoder's uncompiled ``evaluate`` inside the block (:func:`_compile_decoder` sets the compiled
    one on the instance; the class's method is the eager one)."""
    compiled = decoder.__dict__.pop("evaluate", None)
    try:
        yield
    finally:
        if compiled is not None:
            decoder.evaluate = compiled


def _compile_decoder(decoder, device, points_per_frame: int) -> bool:
    """Replace ``decoder.evaluate`` by its ``torch.compile`` version; False (and one warning) if that fails.

    The compiled graph is built here, on zero inputs of a training step's shape (one frame of
    ``points_per_frame`` points), forward and backward, so a missing compiler shows before the
    first epoch; no random numbers are drawn, so the run's stream is the same compiled or not.
    """
    eager = decoder.evaluate
    decoder.evaluate = torch.compile(eager, dynamic=False)
    try:
        code = torch.zeros(1, decoder.latent_dim, device=device, requires_grad=True)
        out = decoder.forward_frames(code, torch.zeros(1, points_per_frame, 4, device=device))
        torch.autograd.grad(out.float().sum(), [code, *decoder.parameters()], allow_unused=True)
    except Exception as exc:  # noqa: BLE001 - any compiler failure: train uncompiled
        decoder.evaluate = eager
        log.warning("train.compile: torch.compile failed (%s); training uncompiled", str(exc).splitlines()[0][:200])
        return False
    return True


def _reference_data(path: Path, out: Path, info, *, resume: bool, overwrite: bool, progress) -> Path:
    """``path``, or for a folder of the authors' sdf_vid files the data set prepared from it, once, in the
    user's cache (:func:`cellinr._util.cache.cache_entry`; reused while the files are unchanged)."""
    from cellinr._util.cache import cache_entry
    from cellinr.data.reference_data import (
        prepare_reference_folder,
        reference_folder_is_prepared,
    )
    from cellinr.errors import DatasetError
    from cellinr.io.arrays import reference_sdf_files

    if not path.is_dir() or (path / "manifest.json").is_file() or not reference_sdf_files(path):
        return path
    cache = cache_entry("sdf_vid", path)
    error = None
    if info.is_main:
        try:
            if not reference_folder_is_prepared(path, cache):
                if info.enabled:  # the other processes would wait (and time out) while process 0 prepares
                    raise DatasetError(f"{path}: the authors' sdf_vid files are not prepared yet; run `cellinr "
                                       f"prepare {path} --out {cache}` first, then train on {cache}")
            prepare_reference_folder(path, cache, progress=progress)  # reuses a prepared one
        except CellinrError as exc:
            error = exc
    dist_utils.share_error(error, info)
    return cache


def _prepare_out(out: Path, cfg: Config, dataset, overwrite: bool) -> Path:
    """Create the working folder of a new run (an existing ``out`` stays until the new run replaces it)."""
    from cellinr._util.outputs import atomic_write_text, begin_run
    from cellinr.model.config import save_config

    work = begin_run(out, resume=False, overwrite=overwrite, done="run.json", progress=ckpt.CHECKPOINT_DIR)
    save_config(cfg, work / "config.yaml")
    atomic_write_text(work / "manifest.json", json.dumps(dataset.manifest, indent=2))
    _write_log(work / "log.csv", [])
    return work


def _save_state(out, epoch, model, optimisers, schedulers, scaler, cfg, fingerprint, seed, tc) -> Path:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "epoch": epoch,
        "seed": seed,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimisers": {k: o.state_dict() for k, o in optimisers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng,
        "sampler": {"seed": seed, "note": "points are a function of (seed, epoch)"},
        "compat": {"config": _compat_dict(cfg), "data": fingerprint},
    }
    return ckpt.save_checkpoint(out, epoch, state, keep=tc.keep_checkpoints)
