"""Latent codes and rotations for new cells.

Samplers (:data:`LATENT_SAMPLERS`): ``gaussian`` z ~ N(0, sigma^2 I) (the reference's sampler),
``fitted`` z ~ N(mean, C) with the Ledoit-Wolf-shrunk covariance of the learned codes,
``perturb`` a learned code plus N(0, sigma^2 I) noise (the reference's choice for filopodial cells),
and ``kde`` a kernel density estimate over the learned codes: a learned code plus N(0, h^2 C) noise
with the shrunk covariance C of the codes (a Gaussian mixture with one component per training
sequence). Rules of thumb such as Scott's give h close to 1 for 64-192-d codes and a handful of
sequences, i.e. samples as far from the codes as ``fitted``; a smaller h keeps them near the codes
the decoder has learned. A run can record its own default sampler (:func:`default_sampler`).
Every draw takes a :class:`numpy.random.Generator`; :func:`sequence_rng` derives an independent one
per output sequence, so sequence i depends only on (seed, i).
"""

from __future__ import annotations

import numpy as np

from cellinr.errors import ParameterError

LATENT_SAMPLERS = ("gaussian", "fitted", "perturb", "kde")
#: Bandwidth of the ``kde`` sampler, relative to the codes' covariance.
KDE_BANDWIDTH = 0.5
#: The sampler of runs that do not record one.
DEFAULT_SAMPLER = "perturb"


def default_sampler(run) -> tuple[str, float | None]:
    """(sampler, sigma) a run recommends (``run.json`` key ``generation``), else :data:`DEFAULT_SAMPLER`."""
    gen = run.info.get("generation") if isinstance(getattr(run, "info", None), dict) else None
    if isinstance(gen, dict) and gen.get("latent") in LATENT_SAMPLERS:
        sigma = gen.get("sigma")
        return gen["latent"], None if sigma is None else check_sigma(sigma)
    return DEFAULT_SAMPLER, None
ROTATION_MODES = ("random", "none")


def check_sigma(sigma: float | None) -> float | None:
    """``sigma`` as a float, or None; refuses zero, negative, NaN and infinite values."""
    if sigma is None:
        return None
    value = float(sigma)
    if not (np.isfinite(value) and value > 0):
        raise ParameterError(f"--sigma {sigma}: must be a positive finite number")
    return value


def check_sampler(sampler: str) -> str:
    if sampler not in LATENT_SAMPLERS:
        raise ParameterError(f"--latent {sampler!r}: unknown sampler; choose one of {', '.join(LATENT_SAMPLERS)}")
    return sampler


def sample_latents(
    sampler: str,
    n: int,
    *,
    codes: np.ndarray,
    sigma: float | None = None,
    rng: np.random.Generator,
    shrinkage: float | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Draw ``n`` latent codes.

    Parameters
    ----------
    sampler : {"gaussian", "fitted", "perturb", "kde"}
        ``gaussian``: z ~ N(0, sigma^2 I). ``fitted``: z ~ N(mean, C) with the mean and the
        Ledoit-Wolf-shrunk covariance C of the learned ``codes`` (sigma unused). ``perturb``: a
        learned code chosen uniformly at random plus N(0, sigma^2 I) noise. ``kde``: a learned code
        plus N(0, h^2 C) noise, h = ``sigma`` or :data:`KDE_BANDWIDTH`.
    n : number of codes.
    codes : (N, L) ndarray, the learned codes.
    sigma : noise scale of ``gaussian`` and ``perturb``; default: the RMS of the learned codes'
        entries for ``gaussian``, a tenth of it for ``perturb``.
    rng : numpy Generator.
    shrinkage : float in [0, 1], optional; fixed covariance shrinkage for ``fitted``.

    Returns
    -------
    latents : (n, L) float32 ndarray
    info : list of dict, per code how it was drawn (e.g. the source index of ``perturb``).
    """
    check_sampler(sampler)
    sigma = check_sigma(sigma)
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 1:
        raise ParameterError(f"learned codes must be (N, L) with N >= 1, got shape {codes.shape}")
    if not np.isfinite(codes).all():
        raise ParameterError("the run's learned codes contain NaN or infinite values")
    rms = float(np.sqrt(np.mean(codes**2))) or 1.0
    length = codes.shape[1]
    if sampler == "gaussian":
        s = rms if sigma is None else sigma
        z = rng.standard_normal((n, length)) * s
        info = [{"sampler": "gaussian", "sigma": s} for _ in range(n)]
    elif sampler == "perturb":
        s = 0.1 * rms if sigma is None else sigma
        src = rng.integers(0, codes.shape[0], size=n)
        z = codes[src] + rng.standard_normal((n, length)) * s
        info = [{"sampler": "perturb", "sigma": s, "source_index": int(i)} for i in src]
    elif sampler == "kde":
        if codes.shape[0] < 2:
            raise ParameterError("--latent kde needs at least 2 learned codes; use perturb")
        _, cov, lam = fit_gaussian(codes, shrinkage=shrinkage)
        h = KDE_BANDWIDTH if sigma is None else float(sigma)
        w, v = np.linalg.eigh(cov)
        factor = v * np.sqrt(np.clip(w, 0.0, None))
        src = rng.integers(0, codes.shape[0], size=n)
        z = codes[src] + h * rng.standard_normal((n, length)) @ factor.T
        info = [{"sampler": "kde", "bandwidth": h, "shrinkage": lam, "source_index": int(i)} for i in src]
    else:
        if codes.shape[0] < 2:
            raise ParameterError("--latent fitted needs at least 2 learned codes; use gaussian or perturb")
        mean, cov, lam = fit_gaussian(codes, shrinkage=shrinkage)
        w, v = np.linalg.eigh(cov)
        factor = v * np.sqrt(np.clip(w, 0.0, None))
        z = mean + rng.standard_normal((n, length)) @ factor.T
        info = [{"sampler": "fitted", "shrinkage": lam} for _ in range(n)]
    return z.astype(np.float32), info


def fit_gaussian(codes: np.ndarray, *, shrinkage: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean and shrunk covariance of codes (N, L): ``C = (1 - a) S + a * (tr S / L) I``.

    ``a`` is the Ledoit-Wolf estimate (Ledoit & Wolf, "A well-conditioned estimator for
    large-dimensional covariance matrices", 2004) unless ``shrinkage`` is given. With few codes
    (N << L) the sample covariance S is singular and ``a`` approaches 1.

    Returns
    -------
    mean : (L,) ndarray
    cov : (L, L) ndarray
    shrinkage : float
    """
    x = np.asarray(codes, dtype=np.float64)
    n, p = x.shape
    mean = x.mean(axis=0)
    xc = x - mean
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    target = mu * np.eye(p)
    if shrinkage is None:
        d2 = np.sum((s - target) ** 2)
        # b2: variance of the per-sample outer products around S (Ledoit-Wolf 2004, lemma 3.3)
        b2 = sum(np.sum((np.outer(r, r) - s) ** 2) for r in xc) / n**2
        a = 1.0 if d2 <= 0 else float(min(1.0, b2 / d2))
    else:
        a = float(shrinkage)
        if not 0.0 <= a <= 1.0:
            raise ParameterError(f"shrinkage must be in [0, 1], got {shrinkage}")
    cov = (1.0 - a) * s + a * target
    return mean, cov, a


def sequence_rng(seed: int, index: int) -> tuple[np.random.Generator, int]:
    """Independent numpy Generator and torch seed of sequence ``index`` under ``seed``.

    Derived with ``SeedSequence(seed, spawn_key=(index,))``, so sequence i does not depend on how
    many sequences are generated or which were skipped.
    """
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),))
    state = ss.generate_state(3, dtype=np.uint32)
    return np.random.default_rng(ss), int(state[1]) << 32 | int(state[2])


def random_rotation(torch_seed: int) -> np.ndarray:
    """One Haar-uniform rotation (3, 3) float64 from a private torch Generator seeded ``torch_seed``."""
    import torch

    from cellinr.nn.rotation import random_rotations

    gen = torch.Generator().manual_seed(int(torch_seed))
    return random_rotations(1, gen)[0].double().numpy()


def slerp_rotation(r0: np.ndarray, r1: np.ndarray, a: float) -> np.ndarray:
    """Geodesic interpolation on SO(3): ``r0 expm(a logm(r0^T r1))`` via scipy Rotation."""
    from scipy.spatial.transform import Rotation

    rel = Rotation.from_matrix(np.asarray(r0).T @ np.asarray(r1))
    return np.asarray(r0) @ Rotation.from_rotvec(a * rel.as_rotvec()).as_matrix()
