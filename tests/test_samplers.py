"""Latent samplers and the collapse / topology scores of generated sequences."""

import numpy as np
import pytest

from cellinr.evaluation.samplers import sequence_topology
from cellinr.generation.samplers import default_sampler, sample_latents


def _balls(radii, centres_per_frame):
    z, y, x = np.ogrid[:20, :20, :40]
    frames = []
    for r, centres in zip(radii, centres_per_frame):
        m = np.zeros((20, 20, 40), bool)
        for c in centres:
            m |= (z - 10) ** 2 + (y - 10) ** 2 + (x - c) ** 2 <= r * r
        frames.append(m)
    return np.stack(frames)


def test_topology_finds_collapse_and_fusion():
    dividing = _balls([6, 6, 5, 5], [[20], [20], [12, 28], [10, 30]])
    topo = sequence_topology(dividing)
    assert topo["components"] == [1, 1, 2, 2] and topo["monotone"] and not any(topo["collapsed"])
    vanishing = _balls([6, 6, 2, 0], [[20]] * 4)
    assert sequence_topology(vanishing)["collapsed"] == [False, False, True, True]
    fusing = _balls([5, 5, 6], [[12, 28], [12, 28], [20]])
    assert not sequence_topology(fusing)["monotone"]


def test_kde_and_the_run_default():
    codes = np.random.default_rng(0).normal(size=(6, 32))
    z, info = sample_latents("kde", 500, codes=codes, sigma=0.1, rng=np.random.default_rng(1))
    nearest = np.linalg.norm(z[:, None] - codes[None], axis=-1).min(axis=1)
    assert nearest.mean() < 0.2 * np.linalg.norm(codes, axis=1).mean()  # samples stay near the learned codes
    assert {i["source_index"] for i in info} == set(range(6))

    class Run:
        info = {"generation": {"latent": "kde", "sigma": 0.3}}

    assert default_sampler(Run()) == ("kde", 0.3)
    Run.info = {}
    assert default_sampler(Run()) == ("perturb", None)
    Run.info = {"generation": {"latent": "kde", "sigma": float("nan")}}
    with pytest.raises(Exception, match="sigma"):
        default_sampler(Run())
