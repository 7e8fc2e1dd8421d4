"""cellinr's files and folders as napari layer data: ``(data, kwargs, layer_type)`` tuples.

Plain functions of numpy and cellinr (napari is not imported here), used by the plugin's reader,
sample data and widget, by ``cellinr view``, and testable without a viewer. Every layer carries its
physical scale: (minutes per frame, microns per voxel in Z, Y, X), with ``units`` to match ("pixel"
where the files do not say).

What :func:`read_path` recognises:

- a folder written by ``generate`` / ``reconstruct`` / ``interpolate`` (``<name>.json`` records):
  per sequence its mask (TIFF or OME-Zarr) as Labels, its meshes as one time-resolved Surface, or its
  SDF (HDF5) as an Image when no mask was written; one such sequence's ``<name>.tif`` / ``.json``;
- a benchmark folder (``benchmark.json``): per sequence the textured image and its tracked labels;
- a run folder (``config.yaml`` + ``model.safetensors``): a quick low-resolution reconstruction of
  every learned code (:func:`cellinr.generation.frames.decode`, :data:`RUN_PREVIEW_SIZE` voxels);
- a prepared SDF data set (``manifest.json``): the SDF of every sequence as an Image;
- a mesh file (PLY / OBJ / STL) or a folder of per-frame meshes (``meshes/<name>/t0000.ply``, ...).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LayerData = tuple  # (data, kwargs, "labels" | "image" | "surface")
MESH_SUFFIXES = (".ply", ".obj", ".stl")
#: Grid edge (voxels) of the quick reconstruction of a run folder.
RUN_PREVIEW_SIZE = 32
#: Grid edge (voxels) of the sample-data cells.
SAMPLE_SIZE = 64
_FRAME_NUMBER = re.compile(r"(\d+)")


def _scale_units(spacing, interval, n_space: int, has_t: bool) -> dict:
    space = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * n_space
    scale = ((float(interval) if interval else 1.0),) * has_t + space[-n_space:]
    units = (("minute" if interval else "pixel"),) * has_t + (("micrometer" if spacing is not None else "pixel"),) * n_space
    return {"scale": scale, "units": units}


def source_layer(path: str | os.PathLike, *, name: str, layer_type: str = "labels", dataset: str | None = None,
                 spacing=None, interval: float | None = None, ndim: int | None = None, **kwargs) -> LayerData:
    """One input read through :func:`cellinr.io.sources.open_source` as a Labels (or Image) layer.

    ``spacing`` / ``interval`` are used when the file's metadata lack them. OME-Zarr stores are passed
    as their lazy multiscale pyramid.
    """
    from cellinr.io.omezarr import is_zarr_store, ngff_levels
    from cellinr.io.sources import open_source

    with open_source(path, ndim=ndim, dataset=dataset) as src:
        spacing = src.spacing if src.spacing is not None else spacing
        interval = src.frame_interval if src.frame_interval is not None else interval
        has_t = "T" in src.axes
        n_space = src.ndim
        if is_zarr_store(path):
            data = ngff_levels(path, dataset=dataset)
            kwargs["multiscale"] = len(data) > 1
            data = data if len(data) > 1 else data[0]
        elif layer_type == "labels":
            data = src.read_all_labels()
        else:
            data = np.stack([src.read_frame(t) for t in range(src.n_frames)])
    if not has_t and not isinstance(data, list) and getattr(data, "ndim", 0) == n_space + 1:
        data = data[0]
    return data, {"name": name, **_scale_units(spacing, interval, n_space, has_t), **kwargs}, layer_type


def mesh_layer(files, *, name: str, interval: float | None = None) -> LayerData:
    """A Surface layer from one mesh file, or from per-frame mesh files (vertices then have a time
    coordinate: the frame index, scaled by ``interval``). Vertices are (z, y, x) in microns."""
    from cellinr.io.meshes import read_mesh

    files = [Path(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)]
    meshes = [read_mesh(f) for f in files]
    if len(meshes) == 1:
        m = meshes[0]
        return ((m.vertices_zyx.astype(np.float32), m.faces.astype(np.int64)),
                {"name": name, "units": ("micrometer",) * 3}, "surface")
    vertices, faces, offset = [], [], 0
    for t, m in enumerate(meshes):
        vertices.append(np.column_stack([np.full(len(m.vertices_zyx), t, np.float32), m.vertices_zyx]))
        faces.append(m.faces + offset)
        offset += len(m.vertices_zyx)
    scale = ((float(interval) if interval else 1.0), 1.0, 1.0, 1.0)
    units = ("minute" if interval else "pixel", "micrometer", "micrometer", "micrometer")
    return ((np.concatenate(vertices).astype(np.float32), np.concatenate(faces).astype(np.int64)),
            {"name": name, "scale": scale, "units": units}, "surface")


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES]

    def number(p: Path):
        found = _FRAME_NUMBER.findall(p.stem)
        return (int(found[-1]) if found else -1, p.name)

    return sorted(files, key=number)


# -- cellinr folders -----------------------------------------------------------------------------------
def sequence_records(folder: Path) -> list[dict]:
    """The per-sequence JSON records of a generated folder, in name order."""
    from cellinr._util.jsonsafe import file_type_of
    from cellinr.generation.runner import SEQUENCE_FORMAT

    out = []
    for p in sorted(folder.glob("*.json")):
        record = _json(p)
        if file_type_of(record) == SEQUENCE_FORMAT:
            out.append(record)
    return out


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def sequence_layers(folder: Path, record: dict, *, meshes: bool = True) -> list[LayerData]:
    """The layers of one generated sequence: mask (Labels), meshes (Surface), or SDF (Image) alone."""
    files = record.get("files", {})
    name = record["name"]
    spacing = (record.get("options") or {}).get("voxel_size_um")
    interval = record.get("frame_interval_min")
    layers = []
    if "tiff" in files:
        layers.append(source_layer(folder / files["tiff"], name=name, spacing=spacing, interval=interval))
    elif "ome-zarr" in files:
        layers.append(source_layer(folder / files["ome-zarr"], name=name, spacing=spacing, interval=interval))
    elif "sdf" in files:
        layers.append(source_layer(folder / files["sdf"], name=f"{name} SDF", layer_type="image", spacing=spacing,
                                   interval=interval, colormap="twilight_shifted"))
    if meshes and files.get("mesh"):
        layers.append(mesh_layer([folder / f for f in files["mesh"]], name=f"{name} surface", interval=interval))
    return layers


def benchmark_layers(folder: Path) -> list[LayerData]:
    """Per benchmark sequence: the textured image (Image) and its tracked instance labels (Labels)."""
    from cellinr.benchmarking import BENCHMARK_JSON

    info = _json(folder / BENCHMARK_JSON) or {}
    layers = []
    for entry in info.get("sequences", []):
        name, files = entry["name"], entry.get("files") or {
            "image": f"sequences/{entry['name']}_image.tif", "mask": f"sequences/{entry['name']}_mask.tif"}
        spacing = entry.get("spacing_zyx_um")
        spacing = spacing[-2:] if spacing else None
        interval = entry.get("frame_interval_min")
        if "image" in files:
            layers.append(source_layer(folder / files["image"], name=f"{name} image", layer_type="image", ndim=2,
                                       spacing=spacing, interval=interval))
            layers.append(source_layer(folder / files["mask"], name=f"{name} labels", ndim=2, spacing=spacing,
                                       interval=interval))
        elif "ome-zarr" in files:
            store = folder / files["ome-zarr"]
            layers.append(source_layer(store, name=f"{name} image", layer_type="image", dataset="image", ndim=2,
                                       spacing=spacing, interval=interval))
            layers.append(source_layer(store, name=f"{name} labels", ndim=2, spacing=spacing, interval=interval))
    return layers


def run_layers(folder: Path, *, size: int = RUN_PREVIEW_SIZE, device: str = "auto") -> list[LayerData]:
    """A quick reconstruction of every learned code of a run on a ``size``^3 grid (Labels layers)."""
    from cellinr.generation.frames import decode, load_for_evaluation

    run, _ = load_for_evaluation(folder, device)
    dims = (int(size),) * 3
    codes, rotations = run.codes, run.rotation_matrices
    layers = []
    for i, name in enumerate(run.names):
        frames = int(run.frames[i])
        sdf = decode(run, codes[i], rotations[i], dims=dims, frames=frames, device=device)
        masks = (sdf <= 0).astype(np.uint8)
        layers.append((masks, {"name": f"{name} (reconstruction {size}^3)",
                               **_scale_units(run.output_spacing(dims), run.output_frame_interval(frames, i), 3, True)},
                       "labels"))
    return layers


def dataset_layers(folder: Path) -> list[LayerData]:
    """The SDF of every sequence of a prepared data set (Image layers, microns per voxel as scale)."""
    from cellinr.io.sdf_dataset import SDFDataset

    ds = SDFDataset(folder)
    interval = ds.manifest.get("frame_interval_min")
    layers = []
    for index, info in enumerate(ds.sequences):
        sdf = np.stack(list(ds.iter_frames(index)))
        layers.append((sdf, {"name": f"{info.name} SDF", "colormap": "twilight_shifted", "contrast_limits": (-1.0, 1.0),
                             **_scale_units((ds.voxel_size_um,) * 3, interval, 3, True)}, "image"))
    return layers


def reader_for(path: str | os.PathLike):
    """A function ``() -> list of layer data`` reading ``path`` when it is a cellinr file or folder that
    this module recognises, else None. Recognising reads only small JSON files; reading is deferred."""
    from functools import partial

    from cellinr._util.jsonsafe import file_type_of
    from cellinr.benchmarking import BENCHMARK_FORMAT, BENCHMARK_JSON
    from cellinr.io.sdf_dataset import FORMAT_NAME as DATASET_FORMAT
    from cellinr.io.sdf_dataset import MANIFEST
    from cellinr.model.run import CONFIG_FILE, MODEL_FILE

    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in MESH_SUFFIXES:
            return lambda: [mesh_layer(path, name=path.stem)]
        if path.suffix.lower() not in (".tif", ".tiff", ".json", ".h5"):
            return None
        record = _json(path.with_name(f"{path.name.split('.')[0]}.json"))
        from cellinr.generation.runner import SEQUENCE_FORMAT

        if file_type_of(record) == SEQUENCE_FORMAT:
            return partial(sequence_layers, path.parent, record)
        return None
    if not path.is_dir():
        return None
    if (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file():
        return partial(run_layers, path)
    info = _json(path / BENCHMARK_JSON) if (path / BENCHMARK_JSON).is_file() else None
    if file_type_of(info) == BENCHMARK_FORMAT:
        return partial(benchmark_layers, path)
    records = sequence_records(path)
    if records:
        return lambda: [layer for record in records for layer in sequence_layers(path, record)]
    manifest = _json(path / MANIFEST) if (path / MANIFEST).is_file() else None
    if file_type_of(manifest) == DATASET_FORMAT:
        return partial(dataset_layers, path)
    frames = _frame_files(path)
    if frames:
        return lambda: [mesh_layer(frames, name=path.name)]
    return None


def read_path(path: str | os.PathLike) -> list[LayerData] | None:
    """The layers of a cellinr file or folder (see :func:`reader_for`), or None when it is not one."""
    reader = reader_for(path)
    return None if reader is None else reader()


# -- new cells -----------------------------------------------------------------------------------------
def generated_layer(model, *, seed: int = 0, size: int = SAMPLE_SIZE, frames: int | None = None,
                    latent: str | None = None, rotation: str = "random", device: str = "auto") -> LayerData:
    """A new cell of ``model`` (run folder or bundled name) as a Labels layer: the cell that
    ``cellinr generate MODEL --n 1 --seed SEED --size SIZE --latent LATENT`` writes (``latent=None``:
    the model's recommended sampler, generate's default)."""
    from cellinr.generation.frontends import sample_cell

    sdf, info = sample_cell(model, seed=seed, latent=latent, rotation=rotation, size=size, frames=frames,
                            device=device)
    name = f"{Path(str(model)).name} seed {seed}"
    meta = {"name": name, "metadata": {"latent": info["latent"].tolist(), "seed": int(seed),
                                       "sampler": info.get("sampler", latent)},
            **_scale_units(info["spacing"], info["frame_interval"], 3, True)}
    return (sdf <= 0).astype(np.uint8), meta, "labels"


def fit_labels(model, labels: np.ndarray, *, scale=None, steps: int = 100, seed: int = 0, device: str = "auto",
               size: int | None = None, workdir: str | os.PathLike | None = None) -> tuple[list[LayerData], list[dict]]:
    """Fit ``model``'s latent space to a (T, Z, Y, X) or (Z, Y, X) label image (one sequence per label).

    The labels are prepared (:func:`cellinr.data.preparation.prepare`, the model's cube size) into a
    temporary folder and fitted (:func:`cellinr.training.fitting.fit`, network frozen); each fitted
    code is decoded on the prepared cube and placed back where the cell is (``translate``).

    Parameters
    ----------
    labels : integer label image; ``scale`` its layer's scale ((T,) Z, Y, X: minutes, microns).
    size : cube edge of the prepared cells (default: the model's training size).
    workdir : where the temporary data set goes (default: the system's temporary folder).

    Returns
    -------
    layers : one Labels layer per cell, the fitted shape.
    results : per cell: name, label, mean Dice, per-frame Dice, final loss (see ``fit``).
    """
    import tempfile

    from cellinr.data.preparation import prepare
    from cellinr.errors import ParameterError
    from cellinr.generation.frames import decode, load_for_evaluation
    from cellinr.io.sdf_dataset import MANIFEST
    from cellinr.io.tiff import write_tiff
    from cellinr.training.fitting import fit

    labels = np.asarray(labels)
    if labels.ndim not in (3, 4):
        raise ParameterError(f"labels: expected a (Z, Y, X) or (T, Z, Y, X) label image, got shape {labels.shape}")
    if labels.ndim == 3:
        labels = labels[None]
        scale = None if scale is None else (1.0, *tuple(scale)[-3:])
    scale = tuple(float(s) for s in scale) if scale is not None else (1.0,) * 4
    run, _ = load_for_evaluation(model, device)
    size = size or run.training_size or SAMPLE_SIZE
    with tempfile.TemporaryDirectory(prefix="cellinr-fit-", dir=workdir) as tmp:
        tmp = Path(tmp)
        dtype = np.uint16 if labels.max() < 2**16 else np.float32
        write_tiff(tmp / "labels.tif", labels.astype(dtype), axes="TZYX", spacing=scale[1:],
                   frame_interval=scale[0] if len(labels) > 1 else None)
        # fitted on the model's own cube (its grid, voxel size and clamp, as fit requires; a coarser grid
        # would need a wider margin in microns than the model's cells leave), shown on a grid of ``size``
        grid = int(run.training_size or size)
        spacing = run.output_spacing((grid,) * 3)
        data = prepare(tmp / "labels.tif", tmp / "data", size=grid, allow_gaps=True, preview=False,
                       voxel_size=None if spacing is None else max(spacing),
                       clamp=float(run.manifest.get("clamp") or 32))
        results = fit(run, data, tmp / "fit", steps=steps, seed=seed, device=device)
        codes = np.load(tmp / "fit" / "codes.npy")
        rotations = np.load(tmp / "fit" / "rotations.npy")
        manifest = json.loads((data / MANIFEST).read_text(encoding="utf-8"))
    voxel = float(manifest["voxel_size_um"]) * (grid - 1) / (int(size) - 1) if int(size) > 1 else 1.0
    layers = []
    for i, (entry, res) in enumerate(zip(manifest["sequences"], results)):
        masks = decode(run, codes[i], rotations[i], size=int(size), frames=int(entry["frames"]), device=device) <= 0
        origin = np.asarray(entry["crop_origin_um"][0], float)
        first = int(entry["source_frames"][0])
        res["label"] = int(entry["label"])
        layers.append((masks.astype(np.uint8), {
            "name": f"fit of label {entry['label']} (Dice {res['dice']:.3f})",
            "scale": (scale[0], voxel, voxel, voxel), "translate": (first * scale[0], *origin),
            "units": ("minute" if len(labels) > 1 else "pixel", "micrometer", "micrometer", "micrometer"),
            "metadata": {"latent": codes[i].tolist(), **res}}, "labels"))
    return layers, results

