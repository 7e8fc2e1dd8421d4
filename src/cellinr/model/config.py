"""Typed, nested configuration of the shape model and its training, with named presets.

A :class:`Config` holds a :class:`ModelConfig` (the auto-decoder), a :class:`SamplingConfig` (how
training points are drawn from the SDF data set) and a :class:`TrainConfig` (optimisation). It is
saved as ``config.yaml`` in every run folder and reloaded exactly (``load_config(save_config(c)) == c``).
Unknown keys and values of the wrong type raise :class:`cellinr.errors.ConfigError` naming the key.

Presets (:data:`PRESETS`):

``reference``
    The reference implementation's defaults (Wiesner et al., MedIA 2024; see METHOD.md): 10 hidden
    layers [128,128,128,320,128,128,320,128,128,128], latent_in (4, 7), xyz_in_all, sine activation
    with omega_0 = 30, 192-d codes, 15,000 epochs, lr 1e-4 (network) / 1e-3 (codes) halved every
    350 epochs, learned rotations (optimised for the first 1000 epochs; started from a principal-axes
    alignment, ``train.rotation_init: identity`` is the reference's start), 3 % of the grid per
    frame (70 % from SDF <= 0.3), 2 frames per step (about 1 M points), new points every 50 epochs (the reference drew them once); the point pool of the full
    33 x 30 x 256^3 data set is 3.0 GB (float16 values).
``small``
    CPU-friendly, with the recipe that reproduces thin structures (filopodia): 5 hidden layers
    [96, 96, 128, 96, 96] with latent_in (3), 64-d codes (about 30k multiply-adds per point); a
    first layer initialised for frequencies up to 10 rad per coordinate unit (``model.coord_freq``;
    the SIREN rule over the fan-in L + 4 gives 0.44); 16,384 points per frame, 60 % near the cell,
    20 % from its thin parts (``sampling.thin_fraction``); an L1 loss truncated at +-0.1 with a hinge
    beyond (``train.clamp_mode: hinge``); 100 epochs, learning rates 5e-4 / 2e-3 halved every 34.
``small-smooth``
    ``small`` plus the eikonal term (``train.eikonal_weight: 0.02``, ``|grad f| = 1`` inside the
    clamp band), for cells without thin protrusions (nuclei, smooth deforming or dividing cells): it
    removes the dents and bumps of a voxel or two that a sine network leaves on smooth surfaces, at
    about 30 % more time per epoch; on filopodia it costs thin-part Dice (bench/bench_fidelity.py).
``small-v1``
    The CPU preset of cellinr 0.1, the baseline of the benchmarks: the same network with the
    SIREN first-layer rule, 5 % of the grid per frame with the reference scheme, plain L1, 200 epochs.
``large``
    The reference architecture with the recipe of ``small`` (for GPUs): 3 % of the grid per frame,
    thin-part sampling, first-layer frequency 10, hinge-truncated loss.
``tiny``
    Seconds-long runs for tests.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from cellinr._util.typed_config import from_mapping
from cellinr.errors import ConfigError

ACTIVATIONS = ("sine", "relu")
ROTATION_PARAMS = ("quaternion", "6d")
ROTATION_INITS = ("principal", "identity")
SAMPLING_SCHEMES = ("reference", "band")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "bf16-hidden", "auto")
CLAMP_MODES = ("both", "hinge")
COMPILE_MODES = ("off", "on", "auto")


@dataclass
class ModelConfig:
    """The auto-decoder f(z, x, y, z, t) -> SDF (DeepSDF layout with SIREN layers)."""

    latent_dim: int = 192
    """Length L of the per-sequence latent code z."""
    hidden: list[int] = field(default_factory=lambda: [128, 128, 128, 320, 128, 128, 320, 128, 128, 128])
    """Nominal widths of the hidden layers (the width of each layer's concatenated input)."""
    latent_in: list[int] = field(default_factory=lambda: [4, 7])
    """Linear-layer indices before which the full input [z; x; y; z; t] is concatenated again."""
    xyz_in_all: bool = True
    """Concatenate (x, y, z, t) to the input of every other hidden layer (and the output layer)."""
    activation: str = "sine"
    """Hidden activation: ``sine`` (SIREN, sin(omega_0 x)) or ``relu`` (the baseline)."""
    omega_0: float = 30.0
    """SIREN frequency factor omega_0 (sine activation only)."""
    omega_first: Union[float, None] = None
    """omega_0 of the first layer; null: ``omega_0``."""
    coord_freq: Union[float, None] = None
    """If set, the first layer's x, y, z weights start U(-f/omega_first, f/omega_first): angular
    frequencies up to f rad per coordinate unit. Null: the SIREN rule U(-1/n, 1/n) over the whole
    fan-in n = L + 4, i.e. only omega_first / (L + 4) rad per unit (an almost linear first layer)."""
    time_freq: Union[float, None] = None
    """The same for the first layer's time column; null: the SIREN rule."""
    latent_init_std: float = 1.0
    """Codes are initialised N(0, (latent_init_std / sqrt(L))^2)."""


@dataclass
class SamplingConfig:
    """How training points are drawn from each frame of the SDF data set.

    Points are voxel centres of the data set's grid. Each frame contributes ``points_per_frame``
    points, or ``round(fraction * Z * Y * X)``: ``near_fraction`` of them from the "near" voxels,
    ``thin_fraction`` from the frame's thin region (the cell's thin parts, e.g. filopodia) and the
    rest from all other voxels (with replacement). The pool of sampled points is rebuilt from
    the HDF5 files every ``resample_every`` epochs, frame by frame, so only one frame of raw data is
    in memory at a time (plus the compact pool: 6 bytes per point with ``pool_dtype: float16``).
    """

    scheme: str = "reference"
    """``reference``: near = SDF <= near_threshold (inside and near the surface);
    ``band``: near = |SDF| <= band (a band around the surface)."""
    fraction: float = 0.03
    """Fraction of the grid's voxels sampled per frame (unless ``points_per_frame`` is set)."""
    points_per_frame: Union[int, None] = None
    """Points sampled per frame, whatever the grid size; null: ``fraction`` of the voxels."""
    near_fraction: float = 0.7
    """Share of a frame's points drawn from the near voxels."""
    near_threshold: float = 0.3
    """Normalised SDF threshold of the ``reference`` scheme."""
    band: float = 0.1
    """Half-width (normalised SDF units) of the ``band`` scheme."""
    thin_fraction: float = 0.0
    """Share of a frame's points drawn from its thin region: the inside voxels that an opening with a
    ball of ``thin_radius`` voxels removes, dilated by ``thin_dilate`` voxels (so the outside next to
    a filopodium is sampled too). 0: off (the reference). The region is computed once per frame from
    the SDF (one or two distance transforms) and kept; it holds no randomness."""
    thin_radius: Union[float, None] = None
    """Opening radius of the thin region in voxels of the data set's grid; null: edge / 32 (2 voxels
    at 64^3, 4 at 128^3)."""
    thin_dilate: Union[float, None] = None
    """Dilation of the thin region in voxels; null: half the radius."""
    frames_per_step: int = 2
    """Frames per optimisation step, over all processes together (the global batch)."""
    resample_every: int = 1
    """Draw new points every this many epochs; the frames forming each step change at the same
    time (the order of the steps changes every epoch)."""
    pool_dtype: str = "float16"
    """Storage type of the sampled SDF values in the pool (``float16`` or ``float32``)."""
    ram_budget_gb: float = 6.0
    """Upper bound for the point pool of one process; a larger pool is an error."""
    cache_gb: float = 1.0
    """Keep the raw frames in memory (no re-reading) when one process's frames fit in this size."""


@dataclass
class TrainConfig:
    """Optimisation of the network, the latent codes and the per-sequence rotations."""

    epochs: int = 15000
    """Passes over all frames."""
    lr_net: float = 1e-4
    """Adam learning rate of the network."""
    lr_codes: float = 1e-3
    """Adam learning rate of the latent codes."""
    lr_rotations: float = 1e-3
    """Adam learning rate of the rotation parameters."""
    lr_step_net: int = 350
    """The network's learning rate is multiplied by ``lr_gamma`` every this many epochs."""
    lr_step_codes: int = 350
    """Step size (epochs) of the codes' schedule."""
    lr_step_rotations: int = 350
    """Step size (epochs) of the rotations' schedule."""
    lr_gamma: float = 0.5
    """Learning-rate decay factor of all three step schedules."""
    clamp: Union[float, None] = None
    """Truncate the L1 loss at +-clamp (normalised SDF units: 0.1 is 3.2 voxels with prepare's default
    32-voxel clamp); none if null."""
    clamp_mode: str = "both"
    """How ``clamp`` truncates the loss: ``both`` (DeepSDF: L1 of clamp(pred) - clamp(target); no
    gradient where the prediction lies beyond the clamp, so a network whose output leaves
    [-clamp, clamp] stops learning there) or ``hinge`` (L1 inside the band |target| < clamp; for
    target >= clamp the penalty relu(clamp - pred), for target <= -clamp relu(pred + clamp): the
    same value where both are clamped, but always a gradient towards the right side)."""
    far_weight: float = 0.0
    """``hinge`` only: weight of an L1 term towards the true SDF beyond the clamp band, so the far
    field keeps its real distance as a margin (no floaters far from the cell); 0: the pure hinge."""
    eikonal_weight: float = 0.0
    """Weight of the eikonal term ``mean | |grad f| - 1 |`` (gradient in voxels of the prepared grid)
    on points inside the clamp band, where the target is a true distance: it penalises the ripples
    a sine network leaves between its samples (dents and bumps of a voxel or two on smooth cells)
    at about twice the cost per step on the points it uses; 0: off (the reference objective)."""
    eikonal_points: int = 2048
    """Points per frame (an evenly spaced subset of the frame's samples) that get the eikonal term."""
    code_reg: float = 1e-4
    """Weight lambda of the latent regulariser lambda * mean ||z||."""
    code_reg_warmup: int = 100
    """The regulariser weight ramps up linearly over this many epochs."""
    grad_clip: Union[float, None] = None
    """Clip the network's gradient norm to this value; none if null."""
    rotations: bool = False
    """Learn one rotation per sequence (the SO(3) disentanglement)."""
    rotation_param: str = "quaternion"
    """Parametrisation of learned rotations: ``quaternion`` or ``6d``."""
    rotation_epochs: int = 1000
    """Rotations are optimised during the first this many epochs, then frozen."""
    rotation_init: str = "principal"
    """Start of the learned rotations of a new run: ``principal`` (every sequence aligned to sequence 0
    before the first epoch: principal-axes hypotheses scored by SDF distance, then refined;
    :func:`cellinr.geometry.orientation.initial_rotations`; needed for rotations beyond about 35
    degrees) or ``identity`` (the reference implementation's start)."""
    precision: str = "fp32"
    """Arithmetic: ``fp32``; on CUDA also ``tf32`` (TF32 matmuls) and ``fp16`` (autocast with a gradient
    scaler); ``bf16`` (autocast on CUDA and CPU: rounds the coordinates to 8 bits, about half a voxel
    at 256^3); ``bf16-hidden`` (CPU and CUDA: the first layer, coordinates and latent terms in fp32,
    the later layers' products and sines in bf16, the output sum in fp32: about twice the points per
    second of fp32 on CPUs with native bf16); ``auto``: ``bf16-hidden`` on CPUs with native bf16
    arithmetic (avx512_bf16 or AMX), else ``fp32`` (the precision used is recorded in run.json)."""
    augment: int = 0
    """Augmented copies per training sequence (:mod:`cellinr.training.augmentation`): each copy is the
    sequence under a fixed similarity transform (Haar-random rotation, scale log-uniform in
    ``augment_scale``, a mirror with probability 1/2 when ``augment_mirror``) with a code of its own;
    every epoch each sequence trains as one of its versions, so an epoch costs the same. For data
    sets of a few dozen cells, so that ``fit`` reaches unseen ones; 0: none."""
    augment_scale: list[float] = field(default_factory=lambda: [0.8, 1.25])
    """Range (min, max) of the copies' isotropic scale factors."""
    augment_mirror: bool = True
    """Mirror half of the copies (cells of either handedness)."""
    augment_original_share: Union[float, None] = None
    """Probability that a sequence trains as itself (not a copy) in an epoch; null: 1 / (augment + 1)."""
    compile: str = "auto"
    """Compile the network's evaluation with ``torch.compile`` (fused sine layers: about 1.4x the
    points per second of eager fp32 on 2 CPU cores): ``on``, ``off``, or ``auto`` (on for runs of at
    least 500 steps on CUDA or on a CPU with a C++ compiler; compiling takes about 30 s). When
    compilation fails the run warns once and continues uncompiled."""
    checkpoint_every: int = 100
    """Write a checkpoint every this many epochs (and at the end)."""
    keep_checkpoints: int = 3
    """Number of most recent checkpoints kept."""


@dataclass
class Config:
    """Everything that defines a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "reference"
    """Name of the preset this configuration started from (informative)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **sections) -> Config:
        return dataclasses.replace(self, **sections)


def _reference() -> Config:
    # the reference sampled points once and kept them; re-reading 990 frames of 256^3 costs minutes,
    # so new points every 50 epochs (a few seconds per epoch amortised)
    return Config(
        sampling=SamplingConfig(resample_every=50), train=TrainConfig(rotations=True), preset="reference"
    )


def _small() -> Config:
    # the recipe of the fidelity study (bench/bench_fidelity.py): frequency-controlled first layer,
    # thin-part sampling, hinge-truncated loss; about 16k points per frame whatever the grid
    return Config(
        model=ModelConfig(latent_dim=64, hidden=[96, 96, 128, 96, 96], latent_in=[3], omega_0=30.0, coord_freq=10.0),
        sampling=SamplingConfig(points_per_frame=16384, near_fraction=0.6, thin_fraction=0.2, frames_per_step=2,
                                resample_every=2, pool_dtype="float32", cache_gb=2.0),
        train=TrainConfig(
            epochs=100, lr_net=5e-4, lr_codes=2e-3, lr_rotations=2e-3, lr_step_net=34, lr_step_codes=34,
            lr_step_rotations=34, clamp=0.1, clamp_mode="hinge", code_reg_warmup=10, rotation_epochs=40,
            checkpoint_every=10, precision="auto",
        ),
        preset="small",
    )


def _small_smooth() -> Config:
    cfg = _small()
    cfg.train.eikonal_weight = 0.02
    cfg.preset = "small-smooth"
    return cfg


def _small_v1() -> Config:
    return Config(
        model=ModelConfig(latent_dim=64, hidden=[96, 96, 128, 96, 96], latent_in=[3], omega_0=30.0),
        sampling=SamplingConfig(fraction=0.05, frames_per_step=2, resample_every=2, pool_dtype="float32"),
        train=TrainConfig(
            epochs=200, lr_net=5e-4, lr_codes=2e-3, lr_rotations=2e-3, lr_step_net=50, lr_step_codes=50,
            lr_step_rotations=50, code_reg_warmup=10, rotation_epochs=75, checkpoint_every=10,
        ),
        preset="small-v1",
    )


def _large() -> Config:
    cfg = _reference()
    cfg.model.coord_freq = 10.0
    cfg.sampling.near_fraction, cfg.sampling.thin_fraction = 0.6, 0.2
    cfg.train.clamp, cfg.train.clamp_mode = 0.1, "hinge"
    cfg.preset = "large"
    return cfg


def _tiny() -> Config:
    return Config(
        model=ModelConfig(latent_dim=8, hidden=[32, 32, 32], latent_in=[2]),
        sampling=SamplingConfig(fraction=0.05, frames_per_step=2, pool_dtype="float32"),
        train=TrainConfig(
            epochs=4, lr_net=1e-3, lr_codes=1e-2, lr_rotations=1e-2, lr_step_net=2, lr_step_codes=2,
            lr_step_rotations=2, code_reg_warmup=2, rotation_epochs=2, checkpoint_every=2,
        ),
        preset="tiny",
    )


#: Named presets: name -> factory returning a fresh Config.
PRESETS: dict[str, typing.Callable[[], Config]] = {
    "reference": _reference, "small": _small, "small-smooth": _small_smooth, "small-v1": _small_v1, "large": _large,
    "tiny": _tiny,
}


def preset(name: str) -> Config:
    """Return a fresh copy of the preset ``name`` (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r}: unknown; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# validation and (de)serialisation

_CHOICES = {
    ("model", "activation"): ACTIVATIONS,
    ("sampling", "scheme"): SAMPLING_SCHEMES,
    ("sampling", "pool_dtype"): ("float16", "float32"),
    ("train", "rotation_param"): ROTATION_PARAMS,
    ("train", "rotation_init"): ROTATION_INITS,
    ("train", "precision"): PRECISIONS,
    ("train", "clamp_mode"): CLAMP_MODES,
    ("train", "compile"): COMPILE_MODES,
}


def validate(config: Config) -> Config:
    """Check types, choices and ranges of ``config``; return it. Raises ConfigError naming the key."""
    config = from_mapping(Config, config.to_dict(), base=config)
    for (section, name), choices in _CHOICES.items():
        value = getattr(getattr(config, section), name)
        if value not in choices:
            raise ConfigError(f"config key {section}.{name}: {value!r} is not one of {', '.join(choices)}")
    m, s, t = config.model, config.sampling, config.train
    positive = {
        "model.latent_dim": m.latent_dim, "sampling.frames_per_step": s.frames_per_step,
        "sampling.resample_every": s.resample_every, "train.checkpoint_every": t.checkpoint_every,
        "train.keep_checkpoints": t.keep_checkpoints, "train.lr_step_net": t.lr_step_net,
        "train.lr_step_codes": t.lr_step_codes, "train.lr_step_rotations": t.lr_step_rotations,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key {key}: must be positive, got {value}")
    strictly_positive = {
        "train.lr_net": t.lr_net, "train.lr_codes": t.lr_codes, "train.lr_rotations": t.lr_rotations,
        "model.omega_0": m.omega_0, "model.latent_init_std": m.latent_init_std,
        "sampling.ram_budget_gb": s.ram_budget_gb, "sampling.band": s.band,
        "train.clamp": t.clamp, "train.grad_clip": t.grad_clip,
    }
    for key, value in strictly_positive.items():
        if value is not None and not value > 0:
            raise ConfigError(f"config key {key}: must be positive, got {value}")
    if not 0 < t.lr_gamma <= 1:
        raise ConfigError(f"config key train.lr_gamma: the decay factor must be in (0, 1], got {t.lr_gamma}")
    non_negative = {
        "train.epochs": t.epochs, "train.code_reg": t.code_reg, "train.code_reg_warmup": t.code_reg_warmup,
        "train.rotation_epochs": t.rotation_epochs, "sampling.cache_gb": s.cache_gb, "train.far_weight": t.far_weight,
        "train.eikonal_weight": t.eikonal_weight,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"config key {key}: must be >= 0, got {value}")
    if t.augment < 0:
        raise ConfigError(f"config key train.augment: must be >= 0, got {t.augment}")
    if len(t.augment_scale) != 2 or not 0 < t.augment_scale[0] <= t.augment_scale[1] < float("inf"):
        raise ConfigError(f"config key train.augment_scale: needs [min, max] with 0 < min <= max, got {t.augment_scale}")
    if t.augment_original_share is not None and not 0 <= t.augment_original_share <= 1:
        raise ConfigError(f"config key train.augment_original_share: must be in [0, 1], got {t.augment_original_share}")
    if not -1 < s.near_threshold < 1:
        raise ConfigError(f"config key sampling.near_threshold: must be in (-1, 1), got {s.near_threshold}")
    if not m.hidden or any(w <= 0 for w in m.hidden):
        raise ConfigError(f"config key model.hidden: needs positive widths, got {m.hidden}")
    if not 0 < s.fraction <= 1:
        raise ConfigError(f"config key sampling.fraction: must be in (0, 1], got {s.fraction}")
    if not 0 <= s.near_fraction <= 1:
        raise ConfigError(f"config key sampling.near_fraction: must be in [0, 1], got {s.near_fraction}")
    if not 0 <= s.thin_fraction <= 1 - s.near_fraction:
        raise ConfigError(f"config key sampling.thin_fraction: must be in [0, 1 - near_fraction], got {s.thin_fraction}")
    for key, value in (("sampling.thin_radius", s.thin_radius), ("sampling.points_per_frame", s.points_per_frame),
                       ("train.eikonal_points", t.eikonal_points),
                       ("model.omega_first", m.omega_first), ("model.coord_freq", m.coord_freq),
                       ("model.time_freq", m.time_freq)):
        if value is not None and not value > 0:
            raise ConfigError(f"config key {key}: must be positive, got {value}")
    if s.thin_dilate is not None and not s.thin_dilate >= 0:
        raise ConfigError(f"config key sampling.thin_dilate: must be >= 0, got {s.thin_dilate}")
    n_layers = len(m.hidden)
    for k in m.latent_in:
        if not 1 <= k <= n_layers:
            raise ConfigError(f"config key model.latent_in: layer {k} outside 1..{n_layers}")
    # DeepSDF convention: the layer before a latent_in layer outputs hidden[k-1] - (L + 4) units.
    from cellinr.nn.decoder import layer_dims

    try:
        layer_dims(m.latent_dim, m.hidden, m.latent_in, m.xyz_in_all)
    except ValueError as exc:
        raise ConfigError(f"config key model.hidden: {exc}") from None
    return config


def config_from_dict(data: dict, base: Config | None = None) -> Config:
    """Build a Config from a (possibly partial) nested dict; missing keys come from ``base``."""
    base = Config() if base is None else base
    return validate(from_mapping(Config, data, base=base))


def to_yaml(config: Config) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)


def from_yaml(text: str, base: Config | None = None, *, source: str = "config") -> Config:
    from cellinr._util.schema import parse_yaml

    data = parse_yaml(text, source, error=ConfigError)
    if data is None:
        data = {}
    try:
        return config_from_dict(data, base)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML (atomically)."""
    from cellinr._util.atomic import atomic_write_text

    atomic_write_text(path, to_yaml(config))
    return Path(path)


def load_config(path: str | os.PathLike, base: Config | None = None) -> Config:
    """Read a YAML config; keys it lacks come from ``base`` (default: the reference preset)."""
    from cellinr._util.schema import read_text

    path = Path(path)
    text = read_text(path, error=ConfigError, what="config file")
    return from_yaml(text, base, source=str(path))
