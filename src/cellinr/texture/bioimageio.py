"""Texture models in the BioImage Model Zoo format (bioimage.io model description 0.5): export and import.

An exported package (a folder, or a ``.zip`` when the output name ends so) holds

``rdf.yaml``
    the model description, written and validated by ``bioimageio.spec``; its ``config.cellinr``
    section keeps the network configuration and intensity range, so the package loads back exactly;
``weights.pt`` (pytorch_state_dict) and ``weights_torchscript.pt`` (torchscript)
    the pix2pixHD generator: a state dict for :class:`cellinr.nn.pix2pixhd.GlobalGenerator` /
    ``LocalEnhancer`` (``import_from: cellinr.nn.pix2pixhd``), and a traced TorchScript module that
    bioimage.io consumers without cellinr (deepImageJ, ilastik, bioimageio.core) can run;
``test_input.npy``, ``test_output.npy``
    a condition map (1, 2, Y, X) float32 (channel 0: foreground, 1: instance boundaries; see
    :func:`cellinr.texture.data.condition_from_labels`) and the generator's image for it (1, 1, Y, X)
    in the training images' intensity units (the ``scale_linear`` postprocessing maps the network's
    [-1, 1] to them);
``README.md``, ``cover.png``
    documentation (how to build the input from instance labels) and a picture of the test pair.

Export needs ``bioimageio.spec`` (``pip install "cellinr[bioimageio]"``). Import needs only PyYAML and
torch: :func:`cellinr.io.bioimageio.read_bioimageio` reads the description as YAML and the state dict with
``torch.load(weights_only=True)`` (loading executes no code; the TorchScript file is never loaded);
:func:`cellinr.texture.apply.load_texture_model` accepts such a package wherever a texture model
folder is accepted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from cellinr.errors import DependencyError, ParameterError
from cellinr.io.bioimageio import (
    CONFIG_KEY,
    read_bioimageio,
)

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "cellinr[bioimageio]"'
STATE_DICT_FILE = "weights.pt"
TORCHSCRIPT_FILE = "weights_torchscript.pt"
#: Edge (pixels) of the test input built when no test labels are given.
TEST_SIZE = 128
CITATION = ("D. Wiesner et al., Generative modeling of living cells with SO(3)-equivariant implicit neural "
            "representations, Medical Image Analysis, 2024")
CITATION_DOI = "10.1016/j.media.2023.102991"


def _test_labels(size: int) -> np.ndarray:
    """A fixed instance label image: a few touching and separate disks (deterministic)."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    rng = np.random.default_rng(0)
    for label in range(1, 9):
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        r = rng.uniform(0.06, 0.12) * size
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = label
    return labels


def _architecture(config) -> tuple[str, dict]:
    kwargs = {"in_channels": config.in_channels, "out_channels": config.out_channels, "ngf": config.ngf,
              "n_downsample": config.n_downsample, "n_blocks": config.n_blocks, "norm": config.norm}
    if config.n_local_enhancers > 0:
        return "LocalEnhancer", {**kwargs, "n_local_enhancers": config.n_local_enhancers,
                                 "n_blocks_local": config.n_blocks_local}
    return "GlobalGenerator", kwargs


def _readme(name: str, tm, size_multiple: int) -> str:
    return f"""# {name}

A pix2pixHD texture generator trained with cellinr (https://github.com/ -- the cellinr package): it turns
an instance segmentation into a plausible fluorescence microscopy image, the last step of cellinr's
synthetic benchmarks (Wiesner et al., Medical Image Analysis 2024).

## Input

`condition`: (batch, channel, y, x) float32 with 2 channels, values 0 or 1: channel 0 is the foreground
(label > 0), channel 1 the instance boundaries (pixels whose 4-neighbourhood holds another label). In
Python: `cellinr.texture.data.condition_from_labels(labels)`. Height and width must be multiples of
{size_multiple}.

## Output

`image`: (batch, channel, y, x) float32, one channel, in the intensity units of the training images
(network output in [-1, 1] mapped linearly to [{tm.lo:g}, {tm.hi:g}]); cellinr rounds it to {tm.dtype}.

## Use with cellinr

`cellinr texture apply PACKAGE --masks MASKS --out OUT`, or `cellinr benchmark SOURCE --out B --texture PACKAGE`:
a package folder, its rdf.yaml or the .zip are accepted wherever a texture model folder is.

## Validation

The test input is a fixed image of 8 disks; the test output is this generator's image for it. The
package was validated with bioimageio.spec when it was written.
"""


def _cover(path: Path, labels: np.ndarray, image: np.ndarray) -> None:
    from cellinr._util.figures import save_png, subplots

    fig, axes = subplots(1, 2, figsize=(6.0, 3.0))
    axes[0].imshow(labels, cmap="tab20", interpolation="nearest")
    axes[1].imshow(image, cmap="gray")
    for ax, title in zip(axes, ("instance labels", "generated image")):
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=100)


def export_bioimageio(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: tuple[str, ...] = ("cellinr developers",),
    license: str = "BSD-3-Clause",
    test_labels: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a texture model (folder or bundled name) as a bioimage.io model package.

    Parameters
    ----------
    model : texture model folder or bundled name (e.g. ``"dsb2018"``).
    out : package folder, or a ``.zip`` file.
    test_labels : (Y, X) instance labels for the test input (default: 8 fixed disks, 128 x 128); Y and X
        must be multiples of the generator's size multiple.
    license : SPDX identifier of the weights' licence.

    Returns
    -------
    Path of the package (``out``).

    Raises
    ------
    DependencyError : bioimageio.spec is not installed (with the install hint).
    """
    try:
        import bioimageio.spec as spec
        from bioimageio.spec.model import v0_5 as bio
    except ImportError:
        raise DependencyError(f"exporting to the BioImage Model Zoo format needs bioimageio.spec: {INSTALL_HINT}"
                              ) from None
    import tempfile

    import torch

    from cellinr import __version__
    from cellinr._util.atomic import atomic_dir, atomic_path
    from cellinr.errors import OutputExistsError
    from cellinr.texture.apply import MODEL_KIND, load_texture_model
    from cellinr.texture.data import condition_from_labels

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output exists; pass --overwrite to replace it")
    tm = load_texture_model(model, device="cpu")
    multiple = int(tm.config.size_multiple)
    labels = _test_labels(TEST_SIZE) if test_labels is None else np.asarray(test_labels)
    if labels.ndim != 2 or labels.shape[0] % multiple or labels.shape[1] % multiple:
        raise ParameterError(f"test_labels: expected a (Y, X) image with sides multiples of {multiple}, "
                             f"got shape {labels.shape}")
    cond = condition_from_labels(labels)[None].astype(np.float32)  # (1, 2, Y, X)
    gain, offset = (tm.hi - tm.lo) / 2.0, (tm.hi + tm.lo) / 2.0
    generator = tm.generator.cpu().eval()
    with torch.no_grad():
        raw = generator(torch.from_numpy(cond)).float().numpy()
    test_output = (raw * gain + offset).astype(np.float32)
    name = name or f"cellinr texture {tm.path.name.removeprefix('texture_')}"
    callable_name, kwargs = _architecture(tm.config)
    with tempfile.TemporaryDirectory(prefix="cellinr-bioimageio-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "test_input.npy", cond)
        np.save(tmp / "test_output.npy", test_output)
        torch.save({k: v.detach().cpu() for k, v in generator.state_dict().items()}, tmp / STATE_DICT_FILE)
        with torch.no_grad():
            torch.jit.trace(generator, torch.from_numpy(cond)).save(str(tmp / TORCHSCRIPT_FILE))
        (tmp / "README.md").write_text(_readme(name, tm, multiple), encoding="utf-8")
        _cover(tmp / "cover.png", labels, test_output[0, 0])
        # instance norm needs more than one pixel at the bottleneck: at least 8 x 8 there
        size = bio.ParameterizedSize(min=8 * multiple, step=multiple)
        axes_in = [bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("foreground"),
                                                                   bio.Identifier("boundaries")]),
                   bio.SpaceInputAxis(id=bio.AxisId("y"), size=size), bio.SpaceInputAxis(id=bio.AxisId("x"), size=size)]
        ref = {a: bio.SizeReference(tensor_id=bio.TensorId("condition"), axis_id=bio.AxisId(a)) for a in "yx"}
        axes_out = [bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("intensity")]),
                    bio.SpaceOutputAxis(id=bio.AxisId("y"), size=ref["y"]),
                    bio.SpaceOutputAxis(id=bio.AxisId("x"), size=ref["x"])]
        descr = bio.ModelDescr(
            name=name,
            description=description or ("pix2pixHD generator: instance labels (foreground and boundary maps) "
                                         "-> synthetic fluorescence image; trained with cellinr"),
            authors=[bio.Author(name=a) for a in authors],
            cite=[bio.CiteEntry(text=CITATION, doi=bio.Doi(CITATION_DOI))],
            license=bio.LicenseId(license),
            documentation=bio.FileDescr(source=tmp / "README.md"),
            covers=[bio.FileDescr(source=tmp / "cover.png")],
            tags=["cellinr", "pix2pixhd", "image-synthesis", "fluorescence", "2d", "pytorch"],
            inputs=[bio.InputTensorDescr(
                id=bio.TensorId("condition"), axes=axes_in, test_tensor=bio.FileDescr(source=tmp / "test_input.npy"),
                data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                description="channel 0: foreground (label > 0); channel 1: instance boundaries")],
            outputs=[bio.OutputTensorDescr(
                id=bio.TensorId("image"), axes=axes_out, test_tensor=bio.FileDescr(source=tmp / "test_output.npy"),
                data=bio.IntervalOrRatioDataDescr(type="float32"),
                postprocessing=[bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=gain, offset=offset))],
                description=f"synthetic image in the training images' units ({tm.lo:g} to {tm.hi:g})")],
            weights=bio.WeightsDescr(
                pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                    source=tmp / STATE_DICT_FILE, pytorch_version=bio.Version(torch.__version__.split("+")[0]),
                    architecture=bio.ArchitectureFromLibraryDescr(
                        callable=bio.Identifier(callable_name), kwargs=kwargs, import_from="cellinr.nn.pix2pixhd")),
                torchscript=bio.TorchscriptWeightsDescr(
                    source=tmp / TORCHSCRIPT_FILE, pytorch_version=bio.Version(torch.__version__.split("+")[0]),
                    parent="pytorch_state_dict"),
            ),
            config={CONFIG_KEY: {"kind": MODEL_KIND, "net": tm.config.to_dict(),
                                 "normalisation": {"lo": tm.lo, "hi": tm.hi, "dtype": tm.dtype},
                                 "cellinr_version": __version__}},
        )
        if out.suffix.lower() == ".zip":
            with atomic_path(out) as target:
                spec.save_bioimageio_package(descr, output_path=target)
        else:
            with atomic_dir(out, overwrite=overwrite) as target:
                spec.save_bioimageio_package_as_folder(descr, output_path=target)
    return out


def import_bioimageio(source: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Convert a bioimage.io package of a cellinr texture model into a texture model folder
    (``texture_model.json`` + ``generator.safetensors``); returns ``out``."""
    import json

    from safetensors.torch import save_file

    from cellinr import __version__
    from cellinr._util.atomic import atomic_dir
    from cellinr.model.registry import TEXTURE_MARKER
    from cellinr.texture.apply import MODEL_KIND

    config, state, path = read_bioimageio(source)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "generator.safetensors"))
        meta = {"kind": MODEL_KIND, "format_version": 1, "net": config["net"], "normalisation": config["normalisation"],
                "imported_from": str(Path(path).resolve()), "cellinr_version": __version__}
        (tmp / TEXTURE_MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Path(out)
