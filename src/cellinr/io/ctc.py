"""Cell Tracking Challenge (CTC) data layout: writer, reader, consistency check, and tracking of masks.

Layout of one sequence ``NN`` under a data-set folder (2D frames are YX, 3D frames ZYX)::

    NN/t000.tif                     images
    NN_GT/SEG/man_seg000.tif        instance masks (uint16; 0 = background)
    NN_GT/TRA/man_track000.tif      the same masks with track ids as labels
    NN_GT/TRA/man_track.txt         one line per track: L B E P (label, begin frame, end frame, parent; 0 = none)

Frame numbers have 3 digits (4 when there are 1000 frames or more). Tracks are derived from label masks
over time by :func:`track_masks`: one connected component per cell and frame, linked to the previous
frame by maximum overlap; when a track's component becomes two or more, the track ends and each
daughter starts a new track whose parent is the mother (the CTC convention).
See Ulman et al., "An objective comparison of cell-tracking algorithms", Nature Methods 14 (2017).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellinr.errors import InputError


@dataclass
class Track:
    """One CTC track: ``label`` present in frames ``begin`` .. ``end`` (inclusive); ``parent`` 0 if none."""

    label: int
    begin: int
    end: int
    parent: int = 0


@dataclass
class CTCSequence:
    """A CTC sequence read back: ``images``, ``seg`` and ``tra`` are (T, Y, X) or (T, Z, Y, X)."""

    images: np.ndarray
    seg: np.ndarray
    tra: np.ndarray
    tracks: list[Track]


def _components(frame: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of every label of ``frame`` (face connectivity), numbered 1..n."""
    out = np.zeros(frame.shape, np.int32)
    n = 0
    values = np.unique(frame)
    for v in values[values > 0]:
        comp, k = ndi.label(frame == v)
        out[comp > 0] = comp[comp > 0] + n
        n += k
    return out, n


def track_masks(masks: np.ndarray) -> tuple[np.ndarray, list[Track]]:
    """Derive CTC tracks from masks over time.

    Parameters
    ----------
    masks : (T, Y, X) or (T, Z, Y, X) integer ndarray
        Binary masks or instance labels per frame; every connected component of a label is one cell.

    Returns
    -------
    labels : ndarray of ``masks``' shape, uint16 (int32 when there are more than 65534 tracks)
        Track id of every cell pixel.
    tracks : list of Track
        Sorted by label. A component that overlaps most with a previous cell continues its track;
        two or more components continuing one cell are a division (the mother ends, the daughters
        get new ids with the mother as parent); components without overlap start parentless tracks.
    """
    masks = np.asarray(masks)
    if masks.ndim not in (3, 4):
        raise InputError(f"masks: expected (T, Y, X) or (T, Z, Y, X), got shape {masks.shape}")
    out = np.zeros(masks.shape, np.uint16)  # 4 GB as int32 for 30 x 256^3; widened only when needed
    tracks: dict[int, Track] = {}
    next_id = 1
    prev = None
    for t in range(masks.shape[0]):
        comp, n = _components(masks[t])
        ids = np.zeros(n + 1, np.int64)
        if prev is not None and n and np.any((prev > 0) & (comp > 0)):
            both = (prev > 0) & (comp > 0)
            pairs, counts = np.unique(np.stack([prev[both], comp[both]]), axis=1, return_counts=True)
            # best previous track for each current component
            best: dict[int, tuple[int, int]] = {}
            for (p, c), k in zip(pairs.T.tolist(), counts.tolist()):
                if c not in best or k > best[c][1] or (k == best[c][1] and p < best[c][0]):
                    best[c] = (p, k)
            children: dict[int, list[int]] = {}
            for c, (p, _) in sorted(best.items()):
                children.setdefault(p, []).append(c)
            for p, cs in children.items():
                if len(cs) == 1:
                    ids[cs[0]] = p
                    tracks[p].end = t
                else:
                    for c in cs:
                        ids[c] = next_id
                        tracks[next_id] = Track(next_id, t, t, p)
                        next_id += 1
        for c in range(1, n + 1):
            if ids[c] == 0:
                ids[c] = next_id
                tracks[next_id] = Track(next_id, t, t, 0)
                next_id += 1
        if next_id > 65535 and out.dtype == np.uint16:
            out = out.astype(np.int32)
        out[t] = ids[comp]
        prev = out[t]
    return out, [tracks[k] for k in sorted(tracks)]


def frame_digits(n_frames: int) -> int:
    """Digits of the CTC frame numbers: 3, or more for 1000 frames and beyond."""
    return max(3, len(str(max(n_frames - 1, 0))))


def sequence_name(index: int) -> str:
    """CTC sequence folder name of ``index`` (1 -> "01")."""
    if index < 1:
        raise ValueError(f"CTC sequence index must be >= 1, got {index}")
    return f"{index:02d}"


def format_man_track(tracks: list[Track]) -> str:
    """The text of ``man_track.txt``: one ``L B E P`` line per track."""
    return "".join(f"{t.label} {t.begin} {t.end} {t.parent}\n" for t in sorted(tracks, key=lambda t: t.label))


def read_man_track(path: str | os.PathLike) -> list[Track]:
    """Read a ``man_track.txt`` file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    tracks = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4 or not all(re.fullmatch(r"-?\d+", p) for p in parts):
            raise InputError(f"{path}: line {n} is not 'L B E P' integers: {line!r}")
        tracks.append(Track(*(int(p) for p in parts)))
    return tracks


def write_ctc_sequence(
    root: str | os.PathLike,
    index: int,
    images: np.ndarray,
    labels: np.ndarray,
    tracks: list[Track] | None = None,
    *,
    spacing: tuple[float, float, float] | None = None,
    compression: str | None = "zlib",
) -> Path:
    """Write one sequence in the CTC layout under ``root``.

    Parameters
    ----------
    root : path
        Data-set folder (created if needed).
    index : int
        Sequence number (1 -> folders ``01`` and ``01_GT``).
    images : (T, Y, X) or (T, Z, Y, X) ndarray
        Images (uint8, uint16 or float32).
    labels : ndarray of the same shape
        Tracked instance labels; when ``tracks`` is None they are derived by :func:`track_masks`.
    tracks : list of Track, optional
    spacing : (z, y, x) microns, optional

    Returns
    -------
    Path of the image folder ``root/NN``.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape != labels.shape or images.ndim not in (3, 4):
        raise InputError(f"CTC export: images {images.shape} and labels {labels.shape} must be equal "
                         "(T, Y, X) or (T, Z, Y, X) arrays")
    if tracks is None:
        labels, tracks = track_masks(labels)
    for t in range(len(images)):
        write_ctc_frame(root, index, t, images[t], labels[t], n_frames=len(images), spacing=spacing,
                        compression=compression)
    write_man_track(root, index, tracks)
    return Path(root) / sequence_name(index)


def write_ctc_frame(
    root: str | os.PathLike, index: int, t: int, image: np.ndarray, labels: np.ndarray, *, n_frames: int,
    spacing: tuple[float, float, float] | None = None, compression: str | None = "zlib",
) -> None:
    """Write frame ``t`` of sequence ``index``: the image and its tracked labels (as SEG and TRA masks).

    For sequences too large to hold in memory; ``n_frames`` sets the digits of the file names.
    ``image`` and ``labels`` are (Y, X) or (Z, Y, X).
    """
    from cellinr.io.tiff import write_tiff

    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape != labels.shape or image.ndim not in (2, 3):
        raise InputError(f"CTC export: frame {t}: image {image.shape} and labels {labels.shape} must be equal "
                         "(Y, X) or (Z, Y, X) arrays")
    if labels.size and labels.max() > 65535:
        raise InputError(f"CTC export: {labels.max()} tracks do not fit uint16 labels")
    labels = labels.astype(np.uint16)
    root = Path(root)
    name = sequence_name(index)
    axes = "YX" if image.ndim == 2 else "ZYX"
    k = f"{t:0{frame_digits(n_frames)}d}"
    write_tiff(root / name / f"t{k}.tif", image, axes=axes, spacing=spacing, compression=compression)
    for sub, prefix in (("SEG", "man_seg"), ("TRA", "man_track")):
        write_tiff(root / f"{name}_GT" / sub / f"{prefix}{k}.tif", labels, axes=axes, spacing=spacing,
                   compression=compression)


def write_man_track(root: str | os.PathLike, index: int, tracks: list[Track]) -> Path:
    """Write ``NN_GT/TRA/man_track.txt`` of sequence ``index``."""
    from cellinr._util.atomic import atomic_write_text

    path = Path(root) / f"{sequence_name(index)}_GT" / "TRA" / "man_track.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, format_man_track(tracks))
    return path


def _numbered(folder: Path, prefix: str) -> dict[int, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    found = {}
    for p in folder.iterdir():
        m = re.fullmatch(rf"{prefix}(\d+)\.tiff?", p.name)
        if m:
            found[int(m.group(1))] = p
    return found


def read_ctc_sequence(root: str | os.PathLike, index: int | str) -> CTCSequence:
    """Read a CTC sequence written by :func:`write_ctc_sequence` (or the challenge's own data with full GT).

    Raises :class:`InputError` when folders or frames are missing or frames disagree in shape.
    """
    from cellinr.io.tiff import read_tiff

    root = Path(root)
    name = sequence_name(index) if isinstance(index, int) else str(index)
    img = _numbered(root / name, "t")
    seg = _numbered(root / f"{name}_GT" / "SEG", "man_seg")
    tra = _numbered(root / f"{name}_GT" / "TRA", "man_track")
    if not img:
        raise InputError(f"{root / name}: no t###.tif images")
    frames = sorted(img)
    if frames != list(range(len(frames))):
        raise InputError(f"{root / name}: frame numbers are not 0..{len(frames) - 1}")
    for what, files in (("SEG", seg), ("TRA", tra)):
        missing = [t for t in frames if t not in files]
        if missing:
            raise InputError(f"{root / (name + '_GT') / what}: no masks for frames {missing[:10]}")

    def stack(files: dict[int, Path]) -> np.ndarray:
        arrays = [read_tiff(files[t]).data for t in frames]
        if len({a.shape for a in arrays}) != 1:
            raise InputError(f"{files[frames[0]].parent}: frames of different shapes")
        return np.stack(arrays)

    tracks = read_man_track(root / f"{name}_GT" / "TRA" / "man_track.txt")
    return CTCSequence(stack(img), stack(seg), stack(tra), tracks)


def check_ctc_sequence(seq: CTCSequence) -> list[str]:
    """Consistency problems of a CTC sequence (empty list: consistent).

    Checks: images, SEG and TRA have one shape; SEG and TRA carry the same labels per frame; the labels
    of each frame are exactly the tracks alive then (begin <= t <= end); tracks are contiguous; parents
    exist and end before their daughters begin.
    """
    problems = []
    if not (seq.images.shape == seq.seg.shape == seq.tra.shape):
        problems.append(f"shapes differ: images {seq.images.shape}, SEG {seq.seg.shape}, TRA {seq.tra.shape}")
        return problems
    by_label = {t.label: t for t in seq.tracks}
    if len(by_label) != len(seq.tracks):
        problems.append("man_track.txt lists a label twice")
    for t in range(len(seq.tra)):
        seg_ids = set(np.unique(seq.seg[t]).tolist()) - {0}
        tra_ids = set(np.unique(seq.tra[t]).tolist()) - {0}
        alive = {k for k, tr in by_label.items() if tr.begin <= t <= tr.end}
        if seg_ids != tra_ids:
            problems.append(f"frame {t}: SEG labels {sorted(seg_ids)} != TRA labels {sorted(tra_ids)}")
        if tra_ids != alive:
            problems.append(f"frame {t}: TRA labels {sorted(tra_ids)} != tracks alive {sorted(alive)}")
    for tr in seq.tracks:
        if tr.end < tr.begin:
            problems.append(f"track {tr.label}: ends ({tr.end}) before it begins ({tr.begin})")
        if tr.parent:
            parent = by_label.get(tr.parent)
            if parent is None:
                problems.append(f"track {tr.label}: parent {tr.parent} is not a track")
            elif parent.end >= tr.begin:
                problems.append(f"track {tr.label}: parent {tr.parent} ends at {parent.end}, not before {tr.begin}")
    return problems


# -- finding the tracking ground truth of a CTC data set -------------------------------------------
#: Track files beside the masks: ground truth (``NN_GT/TRA``) and results (``NN_RES``).
TRACK_FILES = ("man_track.txt", "res_track.txt")
_SEQUENCE = re.compile(r"^(\d+)$")
_GT = re.compile(r"^(\d+)_GT$")


def track_file(folder: str | os.PathLike) -> Path | None:
    """The ``man_track.txt`` (or ``res_track.txt``) of a folder of CTC masks, or None."""
    folder = Path(folder)
    for name in TRACK_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def find_ctc_sequences(path: str | os.PathLike) -> list[Path]:
    """The tracking ground-truth folders (``NN_GT/TRA``) under a CTC data-set folder, in sequence order.

    ``path`` may be the data-set root (holding ``01``, ``01_GT``, ``02``, ...), one ``NN_GT`` folder
    or one ``NN`` image folder (its ``NN_GT/TRA`` beside it is taken). Returns [] when ``path`` is
    none of these (for instance a ``TRA`` folder itself, which is read as it is).
    """
    path = Path(path)
    if not path.is_dir():
        return []
    if _GT.match(path.name):
        tra = path / "TRA"
        return [tra] if tra.is_dir() else []
    if _SEQUENCE.match(path.name):
        tra = path.parent / f"{path.name}_GT" / "TRA"
        return [tra] if tra.is_dir() else []
    found = []
    for sub in path.iterdir():
        m = _GT.match(sub.name)
        if m and sub.is_dir() and (sub / "TRA").is_dir():
            found.append((int(m.group(1)), sub / "TRA"))
    return [p for _, p in sorted(found)]


def sequence_stem(folder: str | os.PathLike) -> str | None:
    """A name for the sequence of a CTC mask folder: ``<dataset>_<NN>`` for ``<dataset>/NN_GT/TRA``
    (``NN`` alone when the data-set folder has no name), None when ``folder`` is not in such a layout."""
    folder = Path(folder).resolve()
    m = _GT.match(folder.parent.name)
    if folder.name not in ("TRA", "SEG") or m is None:
        return None
    dataset = folder.parent.parent.name
    return f"{dataset}_{m.group(1)}" if dataset else m.group(1)
