"""A non-learned, physics-style renderer of fluorescence-like microscope images from instance masks.

Image model (intensities in the units of the target camera)::

    clean = PSF * (b_i * profile * (1 + c * texture)) + background * (1 + v * smooth)
    image = Poisson(gain * clean) / gain + N(0, read_noise^2)

with b_i a log-normal brightness per cell (label), ``profile`` the projected thickness of a rounded
cell (dimmer towards the edge), ``texture`` Gaussian-smoothed white noise (unit variance, correlation
scale ``texture_scale``), a Gaussian PSF of ``psf_sigma`` pixels, a smooth background and
Poisson-Gaussian noise. :func:`estimate_render_params` fits all parameters to a real image and its mask.
Frames of a stack (time points or z slices) get textures correlated from frame to frame.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellinr.errors import InputError, ParameterError
from cellinr.texture.data import check_labels, label_stack

log = logging.getLogger(__name__)

DTYPES = ("uint8", "uint16", "float32")


@dataclass
class RenderParams:
    """Parameters of the renderer (intensities in output units, lengths in pixels)."""

    background: float = 100.0
    """Mean background intensity."""
    background_variation: float = 0.05
    """Relative standard deviation of the smooth background variation."""
    background_scale: float = 48.0
    """Correlation length of the background variation (pixels)."""
    foreground: float = 400.0
    """Median cell signal above the background."""
    cell_cv: float = 0.25
    """Standard deviation of the log brightness between cells."""
    texture_contrast: float = 0.15
    """Relative standard deviation of the interior texture."""
    texture_scale: float = 2.0
    """Correlation length of the interior texture (pixels)."""
    edge_dimming: float = 0.3
    """Relative dimming at the cell edge (0: flat cells; 1: projected sphere thickness)."""
    psf_sigma: float = 1.5
    """Standard deviation of the Gaussian PSF (pixels)."""
    gain: float = 0.5
    """Detected photons per intensity unit (Poisson noise); 0 disables shot noise."""
    read_noise: float = 4.0
    """Standard deviation of the Gaussian (camera) noise."""
    dtype: str = "uint16"
    """Output dtype: uint8, uint16 or float32."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "dtype":
                continue
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ParameterError(f"render parameter {f.name} must be a finite number >= 0, got {value!r}")
            setattr(self, f.name, float(value))
        if self.dtype not in DTYPES:
            raise ParameterError(f"render parameter dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.edge_dimming > 1:
            raise ParameterError(f"render parameter edge_dimming must be <= 1, got {self.edge_dimming}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RenderParams:
        from cellinr._util.typed_config import from_mapping

        return from_mapping(cls, data, where="render parameters")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if sigma <= 0:
        return noise
    smooth = ndi.gaussian_filter(noise, sigma, mode="wrap")
    # unit variance in expectation: divide by the kernel's L2 norm (not the sample std, which is noisy)
    return smooth / max(_kernel_norm(float(sigma), len(shape)), 1e-8)


@functools.lru_cache(maxsize=64)
def _kernel_norm(sigma: float, ndim: int) -> float:
    """L2 norm of scipy's discrete Gaussian kernel (separable: the product of the 1D norms)."""
    delta = np.zeros(2 * int(4 * sigma + 0.5) + 1)
    delta[len(delta) // 2] = 1
    return float(np.sqrt(np.sum(ndi.gaussian_filter1d(delta, sigma, mode="constant") ** 2))) ** ndim


def thickness_profile(labels: np.ndarray) -> np.ndarray:
    """Relative projected thickness of each cell, in [0, 1]: sqrt(u (2 - u)) with u = depth / max depth.

    Parameters
    ----------
    labels : (Y, X) integer ndarray

    Returns
    -------
    (Y, X) float32 ndarray, 1 at each cell's deepest point, 0 on the background.
    """
    labels = np.asarray(labels)
    if not labels.any():
        return np.zeros(labels.shape, np.float32)
    # per-label distance: boundaries between touching cells count as edges
    edges = np.zeros(labels.shape, bool)
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edges[1:, :] |= labels[1:, :] != labels[:-1, :]
    depth = ndi.distance_transform_edt((labels > 0) & ~edges) + (labels > 0)
    # per-label maximum over each label's bounding box (scipy's labelled maximum sorts the whole image)
    max_depth = np.ones(int(labels.max()) + 1, np.float64)
    for k, sl in enumerate(ndi.find_objects(labels), 1):
        if sl is not None:
            max_depth[k] = max(float(depth[sl][labels[sl] == k].max()), 1.0)
    u = np.clip(depth / max_depth[labels], 0.0, 1.0)
    return np.where(labels > 0, np.sqrt(u * (2.0 - u)), 0.0).astype(np.float32)


def cell_brightness(params: RenderParams, n_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Log-normal peak brightness for labels 0 .. n_labels - 1 (label 0, the background, gets 0)."""
    values = params.foreground * np.exp(params.cell_cv * rng.standard_normal(n_labels))
    values[0] = 0.0
    return values


def render(
    labels: np.ndarray, params: RenderParams | None = None, *, seed: int | np.random.Generator = 0,
    frame_correlation: float = 0.9, brightness: np.ndarray | None = None, brightness_is_mean: bool = False,
) -> np.ndarray:
    """Render microscope-like images for instance labels.

    Parameters
    ----------
    labels : (Y, X) or (N, Y, X) integer ndarray
        Instance labels (0 = background); N frames of a time-lapse or the z slices of a volume.
        A label keeps its brightness in all frames.
    params : RenderParams, optional
        Defaults: :class:`RenderParams` ().
    seed : int or numpy Generator
        The same seed gives the same image.
    frame_correlation : float
        Correlation of the texture and noise-free background between consecutive frames (0..1).
    brightness : (L,) ndarray, optional
        Peak brightness of each label (index = label), e.g. from :func:`cell_brightness`, so that
        separate calls (the frames of a 3D+t sequence) keep each cell's brightness; drawn when None.
    brightness_is_mean : bool
        Take ``brightness`` as each cell's mean signal over its interior
        (:func:`cellinr.geometry.regions.label_interiors`, through the PSF) rather than its peak: the
        peak is divided by the cell's mean profile factor, which depends on its size and shape (small
        cells lose more to edge dimming and blur). A brightness distribution measured on real cells'
        means is then reproduced instead of being spread by the shapes.

    Returns
    -------
    ndarray of ``labels``' shape and dtype ``params.dtype``.
    """
    from cellinr.texture.apply import to_dtype

    params = params or RenderParams()
    if not 0.0 <= frame_correlation <= 1.0:
        raise ParameterError(f"frame_correlation must be in [0, 1], got {frame_correlation}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels, single = label_stack(labels, "labels")
    shape2 = labels.shape[1:]
    n_labels = int(labels.max()) + 1
    if brightness is None:
        brightness = cell_brightness(params, n_labels, rng)
    brightness = np.asarray(brightness, np.float64)
    if brightness.ndim != 1 or len(brightness) < n_labels:
        raise ParameterError(f"brightness: needs one value per label 0..{n_labels - 1}, got shape {brightness.shape}")
    brightness = np.concatenate([[0.0], brightness[1:]])
    bg_field = params.background * (1.0 + params.background_variation
                                    * _smooth_noise(rng, shape2, params.background_scale))
    bg_field = np.maximum(bg_field, 0.0)
    texture = _smooth_noise(rng, shape2, params.texture_scale)
    a, b = frame_correlation, float(np.sqrt(max(0.0, 1.0 - frame_correlation**2)))
    out = np.empty(labels.shape, np.float32)
    for k, lab in enumerate(labels):
        if k > 0:  # AR(1) in time: unit variance, correlation a between frames
            texture = a * texture + b * _smooth_noise(rng, shape2, params.texture_scale)
        profile = (1.0 - params.edge_dimming) + params.edge_dimming * thickness_profile(lab)
        peak = _peak_for_mean(lab, profile, brightness, params.psf_sigma) if brightness_is_mean else brightness
        cells = peak[lab] * profile * np.maximum(1.0 + params.texture_contrast * texture, 0.0)
        cells = np.where(lab > 0, cells, 0.0)
        if params.psf_sigma > 0:
            cells = ndi.gaussian_filter(cells, params.psf_sigma, mode="nearest")
        clean = cells + bg_field
        if params.gain > 0:
            clean = rng.poisson(np.maximum(clean, 0.0) * params.gain) / params.gain
        if params.read_noise > 0:
            clean = clean + params.read_noise * rng.standard_normal(shape2)
        out[k] = clean
    out = to_dtype(out, params.dtype)
    return out[0] if single else out


def _peak_for_mean(lab: np.ndarray, profile: np.ndarray, mean: np.ndarray, psf_sigma: float) -> np.ndarray:
    """Per-label peak brightness that gives each label the mean signal ``mean`` over its interior."""
    from cellinr.geometry.regions import label_interiors

    shaped = np.where(lab > 0, profile, 0.0)
    if psf_sigma > 0:
        shaped = ndi.gaussian_filter(shaped, psf_sigma, mode="nearest")
    inner = label_interiors(lab)
    n = len(mean)
    ids = np.arange(n)
    # labels too thin to have an interior are averaged over all their pixels
    where = np.where(inner, lab, 0)
    counts = np.bincount(where.ravel(), minlength=n)[:n]
    factor = np.bincount(where.ravel(), weights=shaped.ravel(), minlength=n)[:n]
    all_counts = np.bincount(lab.ravel(), minlength=n)[:n]
    all_factor = np.bincount(lab.ravel(), weights=shaped.ravel(), minlength=n)[:n]
    factor = np.where(counts > 0, factor / np.maximum(counts, 1), all_factor / np.maximum(all_counts, 1))
    factor = np.where(all_counts[ids] > 0, np.maximum(factor, 0.05), 1.0)
    return mean / factor


def estimate_render_params(image: np.ndarray, mask: np.ndarray) -> RenderParams:
    """Fit :class:`RenderParams` to a real 2D image and its instance mask.

    Background: median outside the dilated mask, with its smooth variation. Noise: a linear fit
    variance = mean / gain + read_noise^2 on high-pass residuals. PSF and edge dimming: the blurred
    model of rounded cells that correlates best with the image around the cells. Cells: per-cell peak
    brightness that reproduces each cell's mean signal through the PSF (median and log spread).
    Texture: correlation length from the within-cell residual, contrast calibrated so that renderings
    have the image's median within-cell variance.

    Parameters
    ----------
    image : (Y, X) ndarray
    mask : (Y, X) integer ndarray
        Instance labels (a binary mask is taken as one label per connected component).

    Returns
    -------
    RenderParams, with ``dtype`` from the image (uint8 / uint16 when it is integral, else float32).
    """
    with np.errstate(invalid="ignore", divide="ignore"):  # scipy's per-label stats divide by absent labels
        return _estimate_render_params(image, mask)


def _estimate_render_params(image: np.ndarray, mask: np.ndarray) -> RenderParams:
    image = np.asarray(image)
    labels = check_labels(mask, "mask")
    if image.ndim != 2 or labels.shape != image.shape:
        raise InputError(f"image and mask: expected two 2D arrays of one shape, got {image.shape} and {labels.shape}")
    if labels.max() == 1:
        labels = ndi.label(labels > 0)[0].astype(np.int32)
    fg = labels > 0
    if not fg.any() or fg.all():
        raise InputError("mask: needs both cells and background to estimate render parameters")
    img = image.astype(np.float64)
    if np.issubdtype(image.dtype, np.integer):
        dtype = "uint8" if image.max() <= 255 and image.dtype == np.uint8 else "uint16"
    else:
        dtype = "float32"

    # background and its smooth variation (normalised convolution over background pixels)
    bg_mask = ~ndi.binary_dilation(fg, iterations=4)
    if bg_mask.sum() < 16:
        bg_mask = ~fg
    background = float(np.median(img[bg_mask]))
    scale = 48.0
    num = ndi.gaussian_filter(np.where(bg_mask, img, 0.0), scale)
    den = ndi.gaussian_filter(bg_mask.astype(float), scale)
    smooth_bg = num / np.maximum(den, 1e-6)
    bg_var = float(np.std(smooth_bg[bg_mask]) / max(background, 1e-6))

    # per-cell signal above background
    ids = np.arange(1, labels.max() + 1)
    present = ids[np.asarray(ndi.sum(fg, labels, ids)) > 0]
    signal = np.asarray(ndi.mean(img, labels, present)) - background
    signal = signal[signal > 0]
    if signal.size == 0:
        raise InputError("image: cells are not brighter than the background; cannot estimate render parameters")
    foreground = float(np.exp(np.mean(np.log(signal))))
    cell_cv = float(np.std(np.log(signal))) if signal.size > 1 else 0.0
    per_label = np.zeros(labels.max() + 1)
    per_label[present] = np.maximum(np.asarray(ndi.mean(img, labels, present)) - background, 1e-6)

    # noise: var(high-pass residual) = f * (mean / gain + read^2) on pixels away from edges
    delta = np.zeros((9, 9))
    delta[4, 4] = 1
    f = float(np.sum((delta - ndi.gaussian_filter(delta, 1.0, mode="constant")) ** 2))
    resid = img - ndi.gaussian_filter(img, 1.0)
    local_mean = ndi.gaussian_filter(img, 2.0)
    calm = ndi.binary_erosion(fg, iterations=2) | ndi.binary_erosion(bg_mask, iterations=2)
    gain, read_noise = _fit_noise(local_mean[calm], resid[calm] ** 2 / f)

    # PSF and edge dimming together: the blurred model of rounded cells that best correlates with the
    # image on and around the cells (dimmed edges and blur look alike, so fit them jointly)
    thick = thickness_profile(labels)
    near = ndi.binary_dilation(fg, iterations=4)
    best_sigma, edge_dimming, best_corr = 1.0, 0.0, -np.inf
    for dim in np.linspace(0.0, 0.9, 7):
        shaped = per_label[labels] * ((1.0 - dim) + dim * thick)
        for sigma in np.arange(0.25, 4.01, 0.25):
            model = ndi.gaussian_filter(shaped, sigma)
            corr = float(np.corrcoef(model[near], img[near])[0, 1])
            if corr > best_corr:
                best_sigma, edge_dimming, best_corr = float(sigma), float(dim), corr

    # the profile's shape inside the cells (away from the blur), for the texture residual below
    inner = ndi.binary_erosion(fg, iterations=max(1, int(round(best_sigma))))
    y = (img - background) / per_label[labels].clip(1e-6)
    q = thick[inner]
    if inner.sum() > 10 and np.ptp(q) > 0:
        c1, c0 = np.polyfit(q, y[inner], 1)
        fit = c0 + c1 * thick
    else:
        fit = np.ones_like(y)

    # texture: within-cell variance left after the profile, minus noise; correlation length from lags 1, 2
    deep = ndi.binary_erosion(fg, iterations=2)
    texture_contrast, texture_scale = 0.0, 2.0
    if deep.sum() > 10:
        res = np.where(deep, y - fit, 0.0)
        noise_var = (per_label[labels][deep] ** -2 * ((img[deep] / gain if gain > 0 else 0.0) + read_noise**2))
        var = float(np.mean(res[deep] ** 2) - np.mean(noise_var))
        texture_contrast = float(np.sqrt(max(var, 0.0)))
        c1_ = _lag_cov(res, deep, 1)
        c2_ = _lag_cov(res, deep, 2)
        if c1_ > 0 and 0 < c2_ < c1_:
            s_eff = float(np.sqrt(3.0 / (4.0 * -np.log(c2_ / c1_))))
            # the texture is seen through the PSF: s_eff^2 = texture_scale^2 + psf^2
            texture_scale = float(np.clip(np.sqrt(max(s_eff**2 - best_sigma**2, 0.25)), 0.5, 20.0))
        # the PSF attenuates the texture variance by the ratio of kernel norms
        atten = (texture_scale**2 / (texture_scale**2 + best_sigma**2))
        texture_contrast = float(np.clip(texture_contrast / np.sqrt(atten), 0.0, 1.0))

    params = RenderParams(
        background=max(background, 0.0), background_variation=float(np.clip(bg_var, 0, 1)), background_scale=scale,
        foreground=foreground, cell_cv=float(np.clip(cell_cv, 0, 3)), texture_contrast=texture_contrast,
        texture_scale=texture_scale, edge_dimming=edge_dimming, psf_sigma=best_sigma, gain=gain,
        read_noise=read_noise, dtype=dtype,
    )
    # calibrate: b_i is a cell's peak brightness, and the PSF spreads signal outside the mask, so find
    # each cell's b_i from the noise-free rendering of equally bright cells (median and log spread)
    clean = RenderParams(**{**params.to_dict(), "gain": 0.0, "read_noise": 0.0, "texture_contrast": 0.0,
                            "background_variation": 0.0, "dtype": "float32"})
    ones = np.zeros(labels.max() + 1)
    ones[present] = params.foreground
    rendered = render(labels, clean, seed=0, brightness=ones)
    model_signal = np.asarray(ndi.mean(rendered, labels, present)) - params.background
    measured = np.asarray(ndi.mean(img, labels, present)) - background
    ok = (model_signal > 0) & (measured > 0)
    if ok.any():
        peak = np.zeros(labels.max() + 1)
        peak[present[ok]] = params.foreground * measured[ok] / model_signal[ok]
        params.foreground = float(np.median(peak[present[ok]]))
        params.cell_cv = float(np.clip(np.std(np.log(peak[present[ok]])), 0, 3))
        # texture contrast: match the median within-cell variance (texture + noise + profile) of the image
        cells = present[ok]
        var_real = np.asarray(ndi.variance(img, labels, cells))
        var0 = np.asarray(ndi.variance(render(labels, RenderParams(**{**params.to_dict(), "texture_contrast": 0.0}),
                                              seed=1, brightness=peak), labels, cells))
        c = max(params.texture_contrast, 0.05)
        var_c = np.asarray(ndi.variance(render(labels, RenderParams(**{**params.to_dict(), "texture_contrast": c}),
                                               seed=1, brightness=peak), labels, cells))
        gain_per_c2 = np.median(var_c - var0) / c**2
        if gain_per_c2 > 0:
            params.texture_contrast = float(np.clip(np.sqrt(max(np.median(var_real - var0), 0.0) / gain_per_c2),
                                                    0.0, 1.0))
    return params


def _lag_cov(res: np.ndarray, region: np.ndarray, lag: int) -> float:
    """Mean product of ``res`` at pixel pairs ``lag`` apart (X and Y) inside ``region``."""
    total, count = 0.0, 0
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(lag, None), slice(None, -lag)
        both = region[tuple(a)] & region[tuple(b)]
        total += float(np.sum((res[tuple(a)] * res[tuple(b)])[both]))
        count += int(both.sum())
    return total / max(count, 1)


def _fit_noise(mean: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """Fit var = mean / gain + read^2 on binned (mean, var) pairs; returns (gain, read_noise)."""
    if mean.size < 50:
        return 0.0, float(np.sqrt(max(np.mean(var), 0.0)))
    edges = np.unique(np.percentile(mean, np.linspace(0, 100, 21)))
    idx = np.clip(np.digitize(mean, edges) - 1, 0, len(edges) - 2)
    xs, ys, ws = [], [], []
    for k in range(len(edges) - 1):
        sel = idx == k
        if sel.sum() >= 20:
            xs.append(np.mean(mean[sel]))
            ys.append(np.median(var[sel]) / 0.4549)  # median of chi2(1) -> mean
            ws.append(np.sqrt(sel.sum()))
    if len(xs) < 2:
        return 0.0, float(np.sqrt(max(np.mean(var), 0.0)))
    slope, intercept = np.polyfit(np.array(xs), np.array(ys), 1, w=np.array(ws))
    if slope <= 1e-9:
        return 0.0, float(np.sqrt(max(np.average(ys, weights=ws), 0.0)))
    if intercept < 0:  # pure shot noise: refit through the origin
        slope = float(np.sum(np.array(ws) * np.array(xs) * np.array(ys)) / np.sum(np.array(ws) * np.array(xs) ** 2))
        intercept = 0.0
    return float(1.0 / slope), float(np.sqrt(intercept))


def _npz_key(path: str | os.PathLike, preferred: str) -> str | None:
    """``preferred`` for an .npz file that holds such an array (e.g. images + labels in one file), else None."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return preferred if preferred in z.files else None
    except (OSError, ValueError):
        return None  # read_stack reports it


def params_like(image_path: str | os.PathLike, mask_path: str | os.PathLike) -> RenderParams:
    """:func:`estimate_render_params` for a 2D image file and mask file (TIFF, .npy; first frame of a stack)."""
    from cellinr.texture.data import read_stack

    image = read_stack(image_path, key=_npz_key(image_path, "images"))
    mask = read_stack(mask_path, key=_npz_key(mask_path, "labels"))
    if image.shape[1:] != mask.shape[1:]:  # (N, Y, X) stacks: only the first frame is used
        raise InputError(f"{image_path} and {mask_path}: image and mask shapes differ "
                         f"({image.shape[1:]} vs {mask.shape[1:]})")
    return estimate_render_params(image[0], check_labels(mask[0], str(mask_path)))


#: Bytes per mask pixel held while one stack is rendered (float32/float64 texture, blur and noise arrays).
RENDER_BYTES_PER_PIXEL = 48


def check_render_memory(items) -> None:
    """Refuse mask stacks whose rendering would not fit in memory (:func:`cellinr._util.memory.check_memory`)."""
    from cellinr._util.memory import check_memory

    for name, labels in items:
        check_memory(int(labels.size) * RENDER_BYTES_PER_PIXEL, None, f"rendering {name} {tuple(labels.shape)}")


def render_masks(
    masks: str | os.PathLike, out: str | os.PathLike, *, like: tuple | list | None = None,
    params: RenderParams | None = None, seed: int = 0, overwrite: bool = False,
) -> Path:
    """Render every mask file of ``masks``; writes ``OUT/<name>.tif`` and ``OUT/render_params.json``.

    Parameters
    ----------
    masks : path
        A mask file (YX or TYX) or a folder of them.
    like : (image path, mask path), optional
        Estimate the parameters from this real pair (overrides ``params``).
    seed : int
        File k is rendered with seed (seed, k).
    """
    from cellinr._util.outputs import (
        atomic_dir,
        atomic_write_text,
        check_new_output,
        check_no_overlap,
    )
    from cellinr.io.tiff import write_tiff
    from cellinr.texture.data import load_masks

    check_no_overlap([masks, *(like or ())], [out])
    check_new_output(out, overwrite=overwrite)
    if like is not None:
        params = params_like(*like)
    params = params or RenderParams()
    items = load_masks(masks)
    check_render_memory(items)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for k, (name, labels) in enumerate(items):
            image = render(labels, params, seed=np.random.default_rng([seed, k]))
            write_tiff(tmp / f"{name}.tif", image[0] if len(labels) == 1 else image,
                       axes="YX" if len(labels) == 1 else "TYX")
        atomic_write_text(tmp / "render_params.json", json.dumps(params.to_dict(), indent=2) + "\n")
    return Path(out)
