"""Textured synthetic images vs the real DSB2018 training image, side by side in one run.

For each texture method (the renderer with parameters estimated from the real pair, the renderer with
default parameters, the bundled pix2pixHD model ``dsb2018``), the real DSB2018 labels are textured and
the result is compared with the real image:

- Wasserstein-1 distance of normalised intensities (each image scaled by its own 0.5 / 99.5 percentiles)
  inside the cells and outside, with a reference: the same distance between the real image's two
  halves (how much two parts of one real image differ);
- the IoU of an Otsu-threshold segmentation against the ground-truth foreground, synthetic vs real
  (target: within 0.1, i.e. the synthetic benchmark is about as hard as the real data).

Also textured: MIPs of random 3D ellipsoids (shapes the real image never saw), Otsu IoU only.
Skips cleanly when ../shared/data/real is absent.

    python bench/bench_texture.py [--seeds 3] [--model dsb2018]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"


def normalise(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return (image.astype(np.float64) - lo) / max(hi - lo, 1e-9)


def w1(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a.ravel(), b.ravel()))


def otsu_iou(image: np.ndarray, fg: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    seg = image > threshold_otsu(image)
    return float((seg & fg).sum() / max((seg | fg).sum(), 1))


def histogram_distances(image: np.ndarray, real: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    a, b = normalise(image), normalise(real)
    fg = labels > 0
    return w1(a[fg], b[fg]), w1(a[~fg], b[~fg])


def ellipsoid_mip(shape=(512, 512), depth=32, n=125, seed=0) -> np.ndarray:
    """MIP (max label) of n random non-overlapping ellipsoids, nuclei-sized like DSB2018 (semi-axes 7-15 px)."""
    rng = np.random.default_rng(seed)
    vol = np.zeros((depth, *shape), np.int32)
    zz, yy, xx = np.mgrid[:depth, :32, :32]
    k = 0
    for _ in range(20 * n):
        a, b, c = rng.uniform(8, 15), rng.uniform(7, 11), rng.uniform(6, 10)
        theta = rng.uniform(0, np.pi)
        y0, x0 = rng.integers(0, shape[0] - 32), rng.integers(0, shape[1] - 32)
        dy, dx = yy - 15.5, xx - 15.5
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = (u / a) ** 2 + (v / b) ** 2 + ((zz - depth / 2) / c) ** 2 <= 1
        box = vol[:, y0:y0 + 32, x0:x0 + 32]
        if (box[inside] > 0).any():
            continue
        k += 1
        box[inside] = k
        if k == n:
            break
    return vol.max(axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="renderer seeds to average (default: 3)")
    parser.add_argument("--model", default="dsb2018", help="texture model folder or bundled name")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    img_path, lab_path = REAL / "dsb2018_nuclei_img.tif", REAL / "dsb2018_nuclei_labels.tif"
    if not img_path.exists() or not lab_path.exists():
        print(f"skipped: real DSB2018 pair not found in {REAL}")
        return 0
    import torch

    from cellinr.io.tiff import read_tiff
    from cellinr.texture.apply import load_texture_model, texture_labels
    from cellinr.texture.renderer import RenderParams, estimate_render_params, render

    torch.set_num_threads(args.threads)
    real = read_tiff(img_path).data
    labels = read_tiff(lab_path).data.astype(np.int32)
    fg = labels > 0
    half = real.shape[1] // 2
    ref_in = w1(normalise(real)[:, :half][fg[:, :half]], normalise(real)[:, half:][fg[:, half:]])
    ref_out = w1(normalise(real)[:, :half][~fg[:, :half]], normalise(real)[:, half:][~fg[:, half:]])
    real_iou = otsu_iou(real, fg)
    t0 = time.perf_counter()
    params = estimate_render_params(real, labels)
    t_est = time.perf_counter() - t0
    ell = ellipsoid_mip()

    methods = {}
    t0 = time.perf_counter()
    methods["render --like"] = [render(labels, params, seed=s) for s in range(args.seeds)]
    t_like = (time.perf_counter() - t0) / args.seeds
    methods["render default"] = [render(labels, RenderParams(), seed=s) for s in range(args.seeds)]
    ell_images = {"render --like": [render(ell, params, seed=s) for s in range(args.seeds)]}
    t_gan = None
    try:
        model = load_texture_model(args.model, device="cpu")
    except Exception as exc:  # report and continue with the renderer
        print(f"texture model {args.model!r} not available: {exc}")
    else:
        t0 = time.perf_counter()
        methods[f"GAN {args.model}"] = [texture_labels(model, labels)]
        t_gan = time.perf_counter() - t0
        ell_images[f"GAN {args.model}"] = [texture_labels(model, ell)]

    print(f"real image {img_path.name} {real.shape}, {len(np.unique(labels)) - 1} nuclei; "
          f"renderer parameters estimated in {t_est:.2f} s:")
    print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.to_dict().items()))
    print()
    print(f"{'method':<18} {'W1 inside':>10} {'W1 outside':>11} {'Otsu IoU':>9} {'IoU - real':>11} "
          f"{'IoU ellipsoid MIPs':>19}")
    print(f"{'real (halves ref)':<18} {ref_in:>10.4f} {ref_out:>11.4f} {real_iou:>9.3f} {0.0:>11.3f} {'':>19}")
    for name, images in methods.items():
        d = np.array([histogram_distances(im, real, labels) for im in images])
        ious = np.array([otsu_iou(im, fg) for im in images])
        ell_txt = ""
        if name in ell_images:
            e = np.array([otsu_iou(im, ell > 0) for im in ell_images[name]])
            ell_txt = f"{e.mean():.3f}" + (f" ± {e.std():.3f}" if len(e) > 1 else "")
        sd = lambda x: f" ± {x.std():.3f}" if len(x) > 1 else ""  # noqa: E731
        print(f"{name:<18} {d[:, 0].mean():>10.4f} {d[:, 1].mean():>11.4f} {ious.mean():>9.3f} "
              f"{ious.mean() - real_iou:>+11.3f} {ell_txt:>19}"
              + (f"   (IoU{sd(ious)})" if len(ious) > 1 else ""))
    print()
    print("W1 ratio to the real-halves reference (1 = as close as two halves of the real image):")
    for name, images in methods.items():
        d = np.array([histogram_distances(im, real, labels) for im in images]).mean(axis=0)
        print(f"  {name:<18} inside {d[0] / ref_in:6.2f}x   outside {d[1] / ref_out:6.2f}x")
    print(f"time per 512x512 image: renderer {t_like:.3f} s" + (f", GAN {t_gan:.3f} s (CPU, {args.threads} thread)"
                                                               if t_gan is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
