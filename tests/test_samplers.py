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


def test_screen_redraws_from_the_same_stream_and_keeps_the_best():
    from cellinr.generation import frontends
    from cellinr.generation.frontends import SCREEN_DRAWS, draw_code

    codes = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    plain = [draw_code(codes, seed=1, index=2, latent="gaussian")[0]]
    seen = []

    def screen(z, rot):  # fails the first two draws
        seen.append(z.copy())
        return 0 if len(seen) > 2 else 3 - len(seen)

    z, rot, info = draw_code(codes, seed=1, index=2, latent="gaussian", screen=screen)
    assert info["screen_draws"] == 3 and info["screen_decreases"] == 0
    np.testing.assert_array_equal(seen[0], plain[0])  # the first draw is the unscreened one
    np.testing.assert_array_equal(z, seen[2])
    assert not np.array_equal(seen[0], seen[1])
    # every draw fails: the one with the fewest decreases is kept
    drops = iter([4, 1, 5, 2, 3, 6, 7, 8])
    z, rot2, info = draw_code(codes, seed=1, index=2, latent="gaussian",
                              screen=lambda z, r: next(drops))
    assert info["screen_draws"] == SCREEN_DRAWS and info["screen_decreases"] == 1
    np.testing.assert_array_equal(rot, rot2)  # the rotation does not depend on the redraws
    assert frontends.SCREEN_DRAWS == 8


def test_screened_generation_never_loses_components(monkeypatch, one_thread):
    from cellinr.generation import frontends
    from cellinr.generation.frontends import sample_cell

    monkeypatch.setattr(frontends, "SCREEN_SIZE", 32)  # the screen's grid = the output grid below
    redrawn = 0
    for i in range(6):
        sdf, info = sample_cell("dividing", seed=0, index=i, size=32, frames=6)
        redrawn += info["screen_draws"] > 1
        if info["screen_decreases"] == 0:
            assert sequence_topology(sdf <= 0)["monotone"], (i, sequence_topology(sdf <= 0)["components"])
    unscreened = sample_cell("dividing", seed=0, index=0, size=32, frames=6, screen_topology=False)[0]
    screened = sample_cell("dividing", seed=0, index=0, size=32, frames=6)
    assert screened[1]["screen_draws"] > 1 or np.array_equal(unscreened, screened[0])
