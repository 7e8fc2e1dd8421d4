"""Reading 2D images and instance masks for texture models, and the generator's condition channels.

Accepted inputs (``images`` and ``masks`` alike):

- a TIFF file holding one 2D image (YX) or a stack of them (TYX, ZYX or any 3D array: one frame per plane);
- a folder of such TIFF files; images and masks are paired by the frame number at the end of their names
  (``t000.tif`` <-> ``man_seg000.tif``), else by sorted order;
- a Cell Tracking Challenge layout: an image folder ``01`` whose masks are in ``01_GT/SEG`` (found
  automatically when ``masks`` is not given), or a data-set folder holding ``01``, ``02``, ... and their
  ``_GT/SEG`` folders;
- an ``.npz`` file with arrays ``images`` and ``labels`` (then ``masks`` may be omitted), or ``.npy`` files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
_CTC_SEQ = re.compile(r"^\d{2,3}$")


@dataclass
class Frame:
    """One 2D training pair: ``image`` (Y, X) float32 and ``labels`` (Y, X) int32 (0 = background)."""

    image: np.ndarray
    labels: np.ndarray
    name: str


def instance_boundaries(labels: np.ndarray) -> np.ndarray:
    """pix2pixHD instance-edge map: pixels whose 4-neighbour along Y or X has another label.

    Parameters
    ----------
    labels : (..., Y, X) integer ndarray

    Returns
    -------
    (..., Y, X) bool ndarray, True on both sides of every boundary between labels (background included),
    so a single cell's map is its outline.
    """
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    dx = labels[..., :, 1:] != labels[..., :, :-1]
    dy = labels[..., 1:, :] != labels[..., :-1, :]
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return edge


def condition_from_labels(labels: np.ndarray) -> np.ndarray:
    """The generator input for a label image: foreground mask and instance boundaries.

    Parameters
    ----------
    labels : (Y, X) or (T, Y, X) integer ndarray

    Returns
    -------
    (2, Y, X) or (T, 2, Y, X) float32 ndarray with values in {0, 1}.
    """
    labels = np.asarray(labels)
    cond = np.stack([labels > 0, instance_boundaries(labels)], axis=-3)
    return cond.astype(np.float32)


def check_labels(array: np.ndarray, where: str) -> np.ndarray:
    """Validate an instance-label array and return it as int32 (bool masks become 0/1).

    Raises :class:`InputError` for non-integer values, negative labels or an empty array.
    """
    array = np.asarray(array)
    if array.size == 0:
        raise InputError(f"{where}: mask is empty (size 0)")
    if array.dtype == bool:
        return array.astype(np.int32)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{where}: masks must hold integer labels, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(f"{where}: masks must hold integer labels, got non-integer values (dtype {array.dtype})")
    if array.min() < 0:
        raise InputError(f"{where}: masks must hold non-negative labels, got minimum {array.min()}")
    if array.max() > np.iinfo(np.int32).max:
        raise InputError(f"{where}: label {array.max()} is too large")
    return array.astype(np.int32)


def label_stack(array: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
    """Validate labels given as (Y, X) or (T, Y, X); return a (T, Y, X) int32 stack and whether the
    input was a single 2D image (so callers can return the same shape they were given)."""
    labels = check_labels(array, where)
    single = labels.ndim == 2
    if single:
        labels = labels[None]
    if labels.ndim != 3:
        raise InputError(f"{where}: expected (Y, X) or (T, Y, X), got shape {labels.shape}")
    return labels, single


def list_tiffs(folder: str | os.PathLike) -> list[Path]:
    """TIFF files of ``folder`` in natural order; :class:`InputError` when there are none."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise InputError(f"{folder}: no TIFF files in folder")
    return sorted(files, key=_natural_key)


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _frame_number(path: Path) -> int | None:
    match = re.search(r"(\d+)$", path.stem)
    return int(match.group(1)) if match else None


def read_stack(path: str | os.PathLike, *, key: str | None = None) -> np.ndarray:
    """Read a 2D image or a stack of 2D images as (N, Y, X) through :func:`cellinr.io.sources.open_source`.

    ``key`` names the array of an .npz file or the dataset of an HDF5 file. A stack of planes
    (Z, Y, X) is read as frames.
    """
    from cellinr.io.sources import open_source

    with open_source(path, dataset=key, ndim=2) as src:
        frames = [src.read_frame(t) for t in range(src.n_frames)]
    return np.stack(frames)


def _ctc_sequences(folder: Path) -> list[tuple[Path, Path]]:
    """(image folder, SEG folder) pairs of a CTC data-set folder, or of one CTC sequence folder."""
    if _CTC_SEQ.match(folder.name) and (folder.parent / f"{folder.name}_GT" / "SEG").is_dir():
        return [(folder, folder.parent / f"{folder.name}_GT" / "SEG")]
    pairs = []
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        seg = folder / f"{sub.name}_GT" / "SEG"
        if sub.is_dir() and _CTC_SEQ.match(sub.name) and seg.is_dir():
            pairs.append((sub, seg))
    return pairs


def _pair_files(images: list[Path], masks: list[Path], img_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    img_nums = [_frame_number(p) for p in images]
    mask_nums = [_frame_number(p) for p in masks]
    if None not in img_nums and None not in mask_nums and len(set(img_nums)) == len(images) \
            and len(set(mask_nums)) == len(masks):
        by_num = dict(zip(img_nums, images))
        pairs = [(by_num[n], m) for n, m in zip(mask_nums, masks) if n in by_num]
        missing = [m.name for n, m in zip(mask_nums, masks) if n not in by_num]
        if missing:
            raise InputError(f"{img_dir}: no image for mask(s) {', '.join(missing[:5])} of {mask_dir}")
        return pairs
    if len(images) != len(masks):
        raise InputError(f"{img_dir} has {len(images)} TIFF files but {mask_dir} has {len(masks)}; cannot pair them")
    return list(zip(images, masks))


def _frames_from_arrays(images: np.ndarray, labels: np.ndarray, img_name: str, mask_name: str) -> list[Frame]:
    if images.shape != labels.shape:
        shape_i = images.shape[1:] if images.shape[0] == 1 else images.shape
        shape_m = labels.shape[1:] if labels.shape[0] == 1 else labels.shape
        raise InputError(f"{img_name} and {mask_name}: image and mask shapes differ ({shape_i} vs {shape_m})")
    labels = check_labels(labels, mask_name)
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise InputError(f"{img_name}: images must be real numbers, got dtype {images.dtype}")
    images = images.astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise InputError(f"{img_name}: image holds NaN or Inf values")
    n = len(images)
    return [Frame(images[i], labels[i], f"{Path(img_name).stem}" + (f"[{i}]" if n > 1 else "")) for i in range(n)]


def load_pairs(images: str | os.PathLike, masks: str | os.PathLike | None = None) -> list[Frame]:
    """Read 2D (image, instance mask) training pairs from files or folders (see the module docstring).

    Parameters
    ----------
    images, masks : path
        Image and mask file or folder. ``masks`` may be None for an .npz file with ``images`` and
        ``labels`` arrays and for Cell Tracking Challenge layouts (masks from ``<seq>_GT/SEG``).

    Returns
    -------
    list of :class:`Frame`, one per 2D frame.

    Raises
    ------
    InputError
        Missing paths, an empty folder, image and mask shapes that differ, non-integer masks.
    """
    images = Path(images)
    if not images.exists():
        raise InputError(f"{images}: not found")
    if masks is None:
        if images.suffix.lower() == ".npz":
            return _frames_from_arrays(
                read_stack(images, key="images"), read_stack(images, key="labels"),
                f"{images}:images", f"{images}:labels",
            )
        if images.is_dir():
            seqs = _ctc_sequences(images)
            if seqs:
                frames = []
                for img_dir, seg_dir in seqs:
                    frames += load_pairs(img_dir, seg_dir)
                return frames
        raise InputError(f"{images}: give --masks (only .npz files and Cell Tracking Challenge layouts carry masks)")
    masks = Path(masks)
    if not masks.exists():
        raise InputError(f"{masks}: not found")
    if images.is_dir() != masks.is_dir():
        raise InputError(f"{images} and {masks}: give two files or two folders")
    if not images.is_dir():
        key_img = "images" if images.suffix.lower() == ".npz" else None
        key_mask = "labels" if masks.suffix.lower() == ".npz" else None
        return _frames_from_arrays(read_stack(images, key=key_img), read_stack(masks, key=key_mask),
                                   str(images), str(masks))
    mask_files = list_tiffs(masks)
    img_files = list_tiffs(images)
    frames = []
    for img_file, mask_file in _pair_files(img_files, mask_files, images, masks):
        frames += _frames_from_arrays(read_stack(img_file), read_stack(mask_file), str(img_file), str(mask_file))
    return frames


def load_masks(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """Read 2D masks or 2D+t mask stacks to texture.

    Parameters
    ----------
    path : path
        A TIFF / .npy / .npz file (YX or TYX; an .npz needs a ``labels`` array or a single array) or a
        folder of such TIFF files.

    Returns
    -------
    list of (name, labels) with labels (T, Y, X) int32 (T = 1 for a 2D mask); name is the file stem.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    files = list_tiffs(path) if path.is_dir() else [path]
    out = []
    for f in files:  # open_source picks an .npz file's "labels" array, or its only array
        out.append((f.stem, check_labels(read_stack(f), str(f))))
    return out
