"""bioimage.io model packages (model description 0.5) as a file format: recognise and read them.

A package is a folder holding ``rdf.yaml``, that file itself (or a ``*.bioimageio.yaml``), or a
``.zip`` archive of the folder. Reading executes nothing: the description is parsed with
``yaml.safe_load`` and the weights with ``torch.load(weights_only=True)``; the TorchScript file is
never loaded. Export and import of cellinr texture models are in :mod:`cellinr.texture.bioimageio`.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from cellinr.errors import RunError

RDF_NAME = "rdf.yaml"
#: The ``config`` section of the description that holds a cellinr texture model's configuration.
CONFIG_KEY = "cellinr"


def is_bioimageio_source(path: str | os.PathLike) -> bool:
    """True for an ``rdf.yaml`` / ``*.bioimageio.yaml`` file, a folder holding ``rdf.yaml``, or a ``.zip`` package."""
    path = Path(path)
    if path.is_file():
        return path.name == RDF_NAME or path.name.endswith(".bioimageio.yaml") or path.suffix.lower() == ".zip"
    return path.is_dir() and (path / RDF_NAME).is_file()


def read_bioimageio(source: str | os.PathLike) -> tuple[dict, dict, Path]:
    """The cellinr section and the generator's state dict of a bioimage.io package (folder, rdf.yaml or .zip).

    Nothing in the package is executed: the description is read as YAML (``yaml.safe_load``) and the
    weights with ``torch.load(weights_only=True)``.

    Returns
    -------
    (config, state_dict, path) : ``config`` has ``net`` and ``normalisation`` like ``texture_model.json``.

    Raises
    ------
    RunError : not a package, not a cellinr texture model, or no pytorch_state_dict weights (one line).
    """
    import torch
    import yaml

    path = Path(source)
    archive = None
    try:
        if path.is_file() and path.suffix.lower() == ".zip":
            archive = zipfile.ZipFile(path)
            names = archive.namelist()
            rdf_name = RDF_NAME if RDF_NAME in names else next((n for n in names if n.endswith(".bioimageio.yaml")), None)
            if rdf_name is None:
                raise RunError(f"{path}: not a bioimage.io package (no {RDF_NAME} in the archive)")
            text = archive.read(rdf_name).decode("utf-8")

            def open_file(name: str) -> bytes:
                return archive.read(name)
        else:
            rdf = path / RDF_NAME if path.is_dir() else path
            if not rdf.is_file():
                raise RunError(f"{path}: not a bioimage.io package (no {RDF_NAME})")
            text = rdf.read_text(encoding="utf-8")
            base = rdf.parent

            def open_file(name: str) -> bytes:
                return (base / name).read_bytes()
        try:
            rdf_data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RunError(f"{path}: {RDF_NAME} is not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(rdf_data, dict) or rdf_data.get("type") != "model":
            raise RunError(f"{path}: not a bioimage.io model description (type {rdf_data.get('type') if isinstance(rdf_data, dict) else None!r})")
        config = (rdf_data.get("config") or {}).get(CONFIG_KEY)
        if not isinstance(config, dict) or "net" not in config:
            raise RunError(f"{path}: a bioimage.io model without a config.{CONFIG_KEY} section (not a cellinr "
                           "texture model; other models cannot be used as texture models)")
        weights = (rdf_data.get("weights") or {}).get("pytorch_state_dict") or {}
        source_name = weights.get("source")
        if not source_name:
            raise RunError(f"{path}: the package has no pytorch_state_dict weights")
        if "://" in str(source_name):
            raise RunError(f"{path}: weights at {source_name} are remote; download the package first")
        try:
            blob = open_file(str(source_name))
        except (KeyError, OSError):
            raise RunError(f"{path}: weights file {source_name} is missing from the package") from None
        try:
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for damaged files
            raise RunError(f"{path}: cannot read the weights {source_name} ({type(exc).__name__})") from None
        return config, state, path
    except zipfile.BadZipFile:
        raise RunError(f"{path}: not a readable .zip package") from None
    finally:
        if archive is not None:
            archive.close()
