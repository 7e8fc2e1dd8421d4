"""``cellinr.scene``: a populated, tracked, textured scene on disk, optionally calibrated against real data.

The file-level front end of :class:`cellinr.scenes.composer.Scene` (the array-level API): it resolves
defaults, calibrates with ``like=``, writes the scene (:func:`cellinr.scenes.export.write_scene`) and,
inside the same atomic folder, the reports: quality measures of the scene and of the real set side by
side (``report/quality.md``, ``.json``) and, with ``difficulty``, the baseline's CTC scores on both.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cellinr.errors import ParameterError

log = logging.getLogger(__name__)


def scene(
    models: str | Sequence[str],
    out: str | os.PathLike,
    *,
    cells: int | None = None,
    density: float | None = None,
    dims: Sequence[int] | None = None,
    frames: int | None = None,
    voxel_size: float | Sequence[float] | None = None,
    seed: int = 0,
    texture: str = "render",
    like: str | os.PathLike | Sequence | None = None,
    like_axes: str | None = None,
    drift: Sequence[float] | None = None,
    step_sigma: Sequence[float] | None = None,
    motion: str = "fixed",
    cycle_frames: int | None = None,
    clearance: float | None = None,
    spacing: float | None = None,
    start_undivided: bool | None = None,
    pinch_speed: float | Sequence[float] | None = None,
    latent: str | None = None,
    sigma: float | None = None,
    render_params=None,
    difficulty: bool = False,
    pairs: bool = True,
    mip: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
) -> Path:
    """Generate a scene of many cells and write it (CTC layout with full ground truth, plain pairs).

    Parameters
    ----------
    models : bundled model names or run folders; cells use them in turn.
    out : output folder (built atomically; a finished identical scene is kept and returned).
    cells, density : cells in the field of view at frame 0, or the fraction of it they cover.
    dims : (Z, Y, X) voxels of the field of view; Z = 1 gives a 2D+t scene of projected cells.
    frames : number of frames.
    voxel_size : microns, one value or (Z, Y, X); default the largest training voxel of the models.
    texture : "render" (the renderer) or a texture model folder / bundled name.
    like : a real CTC folder, or (image, labels) files: dims, frames, density, voxel size (cell size),
        motion, division rate and render parameters are estimated from it unless given.
    like_axes : axes of the ``like`` image and labels files when their metadata lack them (e.g. "TYX").
    drift, step_sigma : motion per frame (Z, Y, X) voxels (see :class:`cellinr.scenes.motion.MotionParams`).
    motion : "fixed" (``drift`` and ``step_sigma``, or estimated with ``like``) or "model": every cell
        moves as its model's training cells did (drift and step covariance of their recorded paths).
    cycle_frames : scene frames per training sequence of a model.
    clearance : voxels of background kept between any two cells (default 0: touching allowed; with
        ``like``, estimated so that the median gap between neighbouring cells is the real one).
    spacing : voxels of background that neighbours prefer: closer ones drift apart a little each frame
        (default 0: off; with ``like``, the real median gap between neighbouring cells).
    start_undivided : start cells of dividing models before their division, so that sisters appear only
        through divisions seen in the scene (default: off; on with ``like`` when the models divide).
    pinch_speed : how many times faster cells run through their pinch before a division, one value or
        one per model (default 1; with ``like``, set so that the share of non-convex cells is the real one).
    render_params : RenderParams, optional (estimated with ``like``; else the renderer's defaults).
    mip : for a 3D scene, also write 2D+t maximum projections and the masks of the cells they show.
    difficulty : also run the baseline (threshold + watershed + LAP tracking) and score it (CTC metrics).

    Returns
    -------
    Path of the scene folder.
    """
    from cellinr.scenes.composer import DEFAULT_LATENT, SceneSpec
    from cellinr.scenes.export import REPORT_DIR, check_paths, write_scene
    from cellinr.scenes.motion import MotionParams

    models = [models] if isinstance(models, (str, os.PathLike)) else [str(m) for m in models]
    like_paths = None if like is None else ([like] if isinstance(like, (str, os.PathLike)) else list(like))
    check_paths(out, like_paths or [])
    from cellinr.scenes.motion import MOTION_SOURCES

    if motion not in MOTION_SOURCES:
        raise ParameterError(f"--motion {motion!r}: choose one of {', '.join(MOTION_SOURCES)}")
    if motion == "model" and (drift is not None or step_sigma is not None):
        raise ParameterError("--motion model takes the motion from the models; leave out --drift and --step-sigma")
    motion = MotionParams(source="model") if motion == "model" else None
    if drift is not None or step_sigma is not None:
        base = MotionParams()
        motion = MotionParams(drift if drift is not None else base.drift,
                              step_sigma if step_sigma is not None else base.sigma)
    latent = latent or DEFAULT_LATENT
    with tempfile.TemporaryDirectory(prefix="cellinr-like-") as tmp:
        like_info = None
        real_ctc = None
        quantiles = None
        if like_paths is not None:
            from cellinr.scenes.calibration import (
                calibrate,
                like_to_ctc,
                probe_models,
                refine_background,
                refine_with_first_frame,
                spec_from_calibration,
            )

            real_ctc = like_to_ctc(like_paths, tmp, axes=like_axes)
            cal = calibrate(real_ctc)
            two_d = (dims[0] if dims is not None else cal.dims[0]) == 1
            probe = probe_models(models, two_d=two_d, seed=seed, latent=latent, sigma=sigma, device=device)
            kwargs = spec_from_calibration(cal, probe, {
                "dims": dims, "frames": frames, "voxel_size": voxel_size, "cells": cells, "density": density,
                "motion": motion, "cycle_frames": cycle_frames, "clearance": clearance,
                "start_undivided": start_undivided, "pinch_speed": pinch_speed, "spacing": spacing})
            kwargs = refine_with_first_frame(kwargs, cal.quality, models=models, seed=seed, latent=latent,
                                             sigma=sigma, device=device)
            kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
            quantiles = cal.quantiles
            like_info = {"source": [str(p) for p in like_paths], "probe": probe,
                         "estimated": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in kwargs.items()}}
        else:
            if dims is None or frames is None:
                raise ParameterError("give --dims and --frames (or --like to take them from a real set)")
            kwargs = {"dims": dims, "frames": frames, "voxel_size": voxel_size, "cells": cells,
                      "density": density, "motion": motion, "cycle_frames": cycle_frames,
                      "clearance": clearance or 0.0, "spacing": spacing or 0.0,
                      "start_undivided": bool(start_undivided),
                      "pinch_speed": 1.0 if pinch_speed is None else pinch_speed}
        if kwargs.get("motion") is None:
            kwargs.pop("motion", None)
        spec = SceneSpec(models=models, seed=seed, latent=latent, sigma=sigma, **kwargs)
        if real_ctc is not None and render_params is None:
            render_params = (refine_background(cal.render, spec, cal.quality, quantiles, device=device)
                             if texture == "render" else cal.render)

        def reports(folder: Path) -> dict:
            info = {}
            if real_ctc is None and not difficulty:
                return info
            from cellinr.scenes.quality import dataset_quality, quality_table

            report = folder / REPORT_DIR
            report.mkdir(parents=True, exist_ok=True)
            columns = {"synthetic": dataset_quality(folder / "ctc")}
            if real_ctc is not None:
                columns["real"] = dataset_quality(real_ctc)
            table = quality_table(columns, reference="real" if real_ctc is not None else None)
            (report / "quality.json").write_text(json.dumps(columns, indent=2) + "\n")
            (report / "quality.md").write_text(table)
            print(table)
            info["quality"] = columns
            if difficulty:
                from cellinr.scenes.difficulty import difficulty_table, scene_difficulty

                scores = {"synthetic": scene_difficulty(folder / "ctc", workdir=tmp)}
                if real_ctc is not None:
                    scores["real"] = scene_difficulty(real_ctc, workdir=tmp)
                (report / "difficulty.json").write_text(json.dumps(scores, indent=2) + "\n")
                text = difficulty_table(scores)
                (report / "difficulty.md").write_text(text)
                print(text)
                info["difficulty"] = scores
            return info

        path, written = write_scene(spec, out, texture=texture, params=render_params, like_info=like_info,
                                    overwrite=overwrite, device=device, pairs=pairs, mip=mip, after=reports,
                                    brightness_quantiles=quantiles,
                                    identity={"like": like_info and like_info["source"], "difficulty": difficulty})
    if not written:
        print(f"{path}: finished scene with these parameters exists; skipped")
    return path
