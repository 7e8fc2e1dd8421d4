"""Loading a trained texture model folder and applying it to 2D masks and 2D+t mask stacks.

Loading never executes code: the network configuration is JSON and the weights are safetensors
(a ``generator.pt`` state dict is read with ``torch.load(weights_only=True)`` when no safetensors file
exists). Bundled models are found by name (``dsb2018`` -> ``cellinr/bundled/texture_dsb2018``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr._util.jsonsafe import file_type_of
from cellinr.errors import ConfigError, RunError
from cellinr.model.registry import TEXTURE_MARKER as MODEL_JSON
from cellinr.model.registry import resolve_texture_model
from cellinr.texture.data import condition_from_labels, label_stack, load_masks

log = logging.getLogger(__name__)

MODEL_KIND = "cellinr-texture-model"


@dataclass
class TextureModel:
    """A loaded texture model.

    Attributes
    ----------
    generator : torch.nn.Module
        The pix2pixHD generator, in eval mode, on ``device``.
    config : TextureNetConfig
    lo, hi : float
        Intensities that the generator's -1 and +1 stand for.
    dtype : str
        Output dtype of the training images ("uint16" or "float32").
    path : Path
    device : torch.device
    """

    generator: object
    config: object
    lo: float
    hi: float
    dtype: str
    path: Path
    device: object


def load_texture_model(model: str | os.PathLike, *, device: str = "auto") -> TextureModel:
    """Load a texture model folder (or a bundled name) written by :func:`cellinr.training.texture.train_texture`,
    or a bioimage.io package of one (folder, ``rdf.yaml`` or ``.zip``; :mod:`cellinr.texture.bioimageio`).

    Raises
    ------
    RunError
        The folder is missing or is not a texture model (no or wrong ``texture_model.json``, no weights,
        weights that do not fit the configuration).
    """
    import torch

    path = resolve_texture_model(model)
    from cellinr.io.bioimageio import is_bioimageio_source, read_bioimageio

    if is_bioimageio_source(path) and not (path / MODEL_JSON).exists():
        meta, state, _ = read_bioimageio(path)  # a bioimage.io package (folder, rdf.yaml or .zip)
        return _texture_model(meta, state, path, path, device)
    if not path.is_dir():
        raise RunError(f"{path}: not a texture model folder (not a folder)")
    meta_path = path / MODEL_JSON
    if not meta_path.exists():
        raise RunError(f"{path}: not a texture model (no {MODEL_JSON})")
    from cellinr._util.schema import Any, Choice, read_json

    meta = read_json(meta_path, {"?kind": Any, "?format": Any}, error=RunError, what="texture model description")
    kind = file_type_of(meta)
    if kind != MODEL_KIND:
        raise RunError(f"{path}: not a texture model ({MODEL_JSON} has kind {kind!r}, not {MODEL_KIND!r})")
    read_json(meta_path, {"net": {}, "normalisation": {"lo": float, "hi": float,
                                                       "?dtype": Choice("uint8", "uint16", "float32")}},
              error=RunError, what="texture model description")
    st_path, pt_path = path / "generator.safetensors", path / "generator.pt"
    try:
        if st_path.exists():
            from safetensors.torch import load_file

            state = load_file(str(st_path))
        elif pt_path.exists():
            state = torch.load(pt_path, map_location="cpu", weights_only=True)
        else:
            raise RunError(f"{path}: texture model has no weights (generator.safetensors)")
    except RunError:
        raise
    except Exception as exc:  # safetensors / torch raise various types for damaged files
        raise RunError(f"{path}: cannot load the generator weights ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200]})") from None
    return _texture_model(meta, state, path, meta_path, device)


def _texture_model(meta: dict, state: dict, path: Path, where: Path, device: str) -> TextureModel:
    """Build the generator that ``meta`` describes, load ``state`` into it, on ``device``."""
    from cellinr._util.device import resolve_device
    from cellinr.nn.pix2pixhd import build_generator
    from cellinr.nn.texture_config import TextureNetConfig

    try:
        config = TextureNetConfig.from_dict(meta["net"])
        norm = meta["normalisation"]
        lo, hi, dtype = float(norm["lo"]), float(norm["hi"]), str(norm.get("dtype", "float32"))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise RunError(f"{where}: incomplete texture model description ({exc})") from None
    if dtype not in ("uint8", "uint16", "float32"):
        raise RunError(f"{where}: unknown output dtype {dtype!r}")
    if not hi > lo:
        raise RunError(f"{where}: key normalisation: hi must exceed lo, got lo {lo:g}, hi {hi:g}")
    generator = build_generator(config)
    try:
        generator.load_state_dict(state)
    except Exception as exc:  # torch raises various types for mismatched weights
        raise RunError(f"{path}: cannot load the generator weights ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200]})") from None
    dev = resolve_device(device)
    generator.to(dev).eval()
    return TextureModel(generator, config, lo, hi, dtype, path, dev)


def texture_labels(model: TextureModel, labels: np.ndarray, *, batch_size: int = 4) -> np.ndarray:
    """Generate images for label images.

    Parameters
    ----------
    model : TextureModel
    labels : (Y, X) or (T, Y, X) integer ndarray
        Instance labels (0 = background); a binary mask is one instance per connected region.

    Returns
    -------
    ndarray of the same shape, dtype ``model.dtype``, in the training images' intensity units.
    """
    import torch

    labels, single = label_stack(labels, "masks")
    cond = condition_from_labels(labels)  # (T, 2, Y, X)
    m = model.config.size_multiple
    h, w = labels.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
        cond = np.pad(cond, [(0, 0), (0, 0), (0, ph), (0, pw)], mode=mode)
    out = np.empty(labels.shape, np.float32)
    with torch.no_grad():
        for i in range(0, len(cond), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(cond[i:i + batch_size])).to(model.device)
            y = model.generator(x).float().cpu().numpy()[:, 0, :h, :w]
            out[i:i + batch_size] = (y + 1.0) / 2.0 * (model.hi - model.lo) + model.lo
    out = to_dtype(out, model.dtype)
    return out[0] if single else out


def to_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    """Round and clip a float image into ``dtype`` ("uint8", "uint16" or "float32")."""
    if dtype == "float32":
        return image.astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.round(image), info.min, info.max).astype(dtype)


def apply_texture(
    model: str | os.PathLike, masks: str | os.PathLike, out: str | os.PathLike, *,
    device: str = "auto", overwrite: bool = False,
) -> Path:
    """Texture every mask file of ``masks`` with a texture model; writes ``OUT/<name>.tif`` (YX or TYX).

    Parameters
    ----------
    model : path or bundled name
    masks : path
        A mask file (YX or TYX) or a folder of them (see :func:`cellinr.texture.data.load_masks`).
    out : path
        Output folder, written atomically (an existing one needs ``overwrite``).
    """
    from cellinr._util.memory import check_memory
    from cellinr._util.outputs import atomic_dir, check_new_output, check_no_overlap
    from cellinr.io.tiff import write_tiff

    check_no_overlap([model, masks], [out])
    check_new_output(out, overwrite=overwrite)
    tm = load_texture_model(model, device=device)
    items = load_masks(masks)
    for name, labels in items:  # condition (2 channels), output, and the generator's widest activations
        per_pixel = 4 * (3 + 4 * tm.config.ngf * (1 + tm.config.n_local_enhancers))
        check_memory(int(labels.size) * per_pixel, None, f"texturing {name} {tuple(labels.shape)}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name, labels in items:
            image = texture_labels(tm, labels)
            axes = "YX" if len(labels) == 1 else "TYX"
            write_tiff(tmp / f"{name}.tif", image[0] if len(labels) == 1 else image, axes=axes)
    return Path(out)
