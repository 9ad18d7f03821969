"""Gradient statistics on constructed clouds with known answers; per-token gradients."""

import numpy as np
import pytest
import torch

from opd_lib import geometry
from opd_lib.gkd import GKDBatch
from opd_lib.lab import char_tokenizer, tiny_qwen3


def test_all_equal_vectors():
    g = np.tile(np.array([1.0, -2.0, 0.5]), (50, 1))
    s = geometry.gradient_statistics(g, reference=np.array([1.0, -2.0, 0.5]))
    assert s["density"] == 1.0
    assert s["bias"] == pytest.approx(1.0)
    assert s["concentration"] == pytest.approx(1 / 50)
    assert s["effective_tokens"] == pytest.approx(50)
    assert s["mean_cosine"] == pytest.approx(1.0)
    assert s["alignment"] == pytest.approx(1.0)


def test_isotropic_noise():
    rng = np.random.default_rng(0)
    n = 400
    s = geometry.gradient_statistics(rng.normal(size=(n, 2000)))
    assert s["density"] == 1.0
    assert s["bias"] == pytest.approx(1 / np.sqrt(n), rel=0.1)
    assert abs(s["mean_cosine"]) < 0.01
    assert s["concentration"] < 0.03


def test_one_dominant_vector():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(200, 50))
    g[17] *= 1000
    s = geometry.gradient_statistics(g)
    assert s["concentration"] > 0.99
    assert s["density"] == pytest.approx(1 / 200)
    assert s["effective_tokens"] == pytest.approx(1.0, abs=0.01)


def test_bad_input():
    with pytest.raises(ValueError):
        geometry.gradient_statistics(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        geometry.gradient_statistics(np.ones(4))
    with pytest.raises(ValueError):
        geometry.gradient_statistics(np.ones((3, 4)), reference=np.ones(5))


def test_output_gradients_match_autograd():
    tok = char_tokenizer()
    model = tiny_qwen3(tok, layers=1, hidden=16, heads=2, seed=0, tie_word_embeddings=False)
    batch = GKDBatch.from_texts(tok, ["ab:", "c:"], ["ba", "cc"])
    coeff = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 3.0]])
    fast = geometry.per_token_gradients(model, batch, coeff, "output")
    exact = geometry.per_token_gradients(model, batch, coeff, ["lm_head.weight"])
    assert fast.shape == exact.shape == (6, len(tok) * 16)
    assert torch.allclose(fast, exact, atol=1e-5)
    assert torch.all(fast[4] == 0)  # zero coefficient, zero gradient
    with pytest.raises(ValueError):
        geometry.per_token_gradients(model, batch, coeff[:, :2], "output")
    with pytest.raises(ValueError):
        geometry.per_token_gradients(model, batch, coeff, ["no.such.weight"])


def test_project_2d():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 5)), rng.normal(size=(7, 5))
    (pa, pb), comps = geometry.project_2d(a, b)
    assert pa.shape == (10, 2) and pb.shape == (7, 2) and comps.shape == (2, 5)


def test_project_2d_finds_the_plane_of_a_rank_two_cloud():
    """Points on a known plane (plus tiny noise) in 40 dimensions: the components span that
    plane, are orthonormal, and the projection keeps (almost) all of the centred variance."""
    rng = np.random.default_rng(1)
    plane = np.linalg.qr(rng.normal(size=(40, 2)))[0].T  # [2, 40] orthonormal rows
    coords = rng.normal(size=(300, 2)) * np.array([5.0, 2.0])
    cloud = coords @ plane + 3.0 + 1e-6 * rng.normal(size=(300, 40))
    (p1, p2), comps = geometry.project_2d(cloud[:200], cloud[200:])
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-8)
    np.testing.assert_allclose(np.linalg.svd(comps @ plane.T, compute_uv=False), 1.0, atol=1e-6)
    centred = cloud - cloud.mean(0)
    kept = np.concatenate([p1, p2]) - np.concatenate([p1, p2]).mean(0)
    assert (kept**2).sum() / (centred**2).sum() > 1 - 1e-9
    # the first component carries the larger spread (5 against 2)
    assert kept[:, 0].var() > 4 * kept[:, 1].var()
