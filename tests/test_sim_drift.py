import itertools

import numpy as np
import pytest

from opd_lib import divergences
from opd_lib.sim import drift


@pytest.fixture
def pair():
    return drift.make_markov_pair(seed=0)


def test_pair_rows_are_distributions_and_teacher_avoids_unfamiliar_tokens(pair):
    np.testing.assert_allclose(pair.teacher.sum(1), 1.0)
    np.testing.assert_allclose(pair.student.sum(1), 1.0)
    assert np.all(pair.teacher[:, ~pair.familiar] == 0)
    assert pair.familiar[pair.prompt]


def test_make_markov_pair_is_deterministic_and_validates():
    a, b = drift.make_markov_pair(seed=3), drift.make_markov_pair(seed=3)
    np.testing.assert_array_equal(a.student, b.student)
    with pytest.raises(ValueError, match="fit_error"):
        drift.make_markov_pair(fit_error=1.5)
    with pytest.raises(ValueError, match="n_unfamiliar"):
        drift.make_markov_pair(vocab_size=3, n_unfamiliar=3)


def test_state_marginals_are_distributions_starting_at_the_prompt(pair):
    for who in ("teacher", "student"):
        d = drift.state_marginals(pair, 12, who)
        np.testing.assert_allclose(d.sum(1), 1.0)
        assert d[0, pair.prompt] == 1.0
    with pytest.raises(ValueError, match="prefixes"):
        drift.state_marginals(pair, 5, "oracle")
    with pytest.raises(ValueError, match="T must"):
        drift.state_marginals(pair, 0, "teacher")


def test_position_kl_is_the_same_at_t1_and_larger_on_policy_later(pair):
    off = drift.expected_position_kl(pair, 30, "teacher")
    on = drift.expected_position_kl(pair, 30, "student")
    assert off[0] == pytest.approx(on[0])
    assert np.all(on[2:] > off[2:])
    assert on[-1] > 5 * off[-1]


def test_position_kl_uses_forward_kl_per_state(pair):
    per_state = divergences.forward_kl(pair.teacher, pair.student)
    d = drift.state_marginals(pair, 4, "student")
    np.testing.assert_allclose(drift.expected_position_kl(pair, 4, "student"), d @ per_state)


def test_prefix_tv_matches_brute_force_enumeration():
    pair = drift.make_markov_pair(vocab_size=3, seed=1)
    T = 5
    tv = drift.prefix_tv(pair, T)
    for t in range(1, T):
        pt, ps = [], []
        for path in itertools.product(range(3), repeat=t):
            prev = (pair.prompt,) + path[:-1]
            pt.append(np.prod([pair.teacher[a, b] for a, b in zip(prev, path, strict=True)]))
            ps.append(np.prod([pair.student[a, b] for a, b in zip(prev, path, strict=True)]))
        assert tv[t] == pytest.approx(0.5 * np.abs(np.array(pt) - np.array(ps)).sum())
    assert tv[0] == 0.0


def test_prefix_tv_grows_and_bounds_state_tv(pair):
    tv = drift.prefix_tv(pair, 8)
    assert np.all(np.diff(tv) >= -1e-12) and tv[-1] > tv[1] > 0
    assert np.all(drift.state_tv(pair, 8) <= tv + 1e-12)
    with pytest.raises(ValueError, match="too many"):
        drift.prefix_tv(pair, 40)


def test_sampled_tokens_follow_the_chain(pair):
    tokens = drift.sample_tokens(pair, 10, 20_000, "student", seed=0)
    assert tokens.shape == (20_000, 10)
    freq = np.bincount(tokens[:, 5], minlength=pair.vocab_size) / 20_000
    np.testing.assert_allclose(freq, drift.state_marginals(pair, 7, "student")[6], atol=0.01)
    teacher_tokens = drift.sample_tokens(pair, 10, 500, "teacher", seed=0)
    assert pair.familiar[teacher_tokens].all()
    np.testing.assert_array_equal(tokens, drift.sample_tokens(pair, 10, 20_000, "student", seed=0))


def test_estimator_moments_k1_k3_unbiased_k2_biased():
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.3, 0.4, 0.3])
    m = drift.kl_estimator_moments(p, q)
    assert m["kl"] == pytest.approx(float(divergences.reverse_kl(p, q)))
    assert m["bias"][0] == pytest.approx(0, abs=1e-12)
    assert m["bias"][2] == pytest.approx(0, abs=1e-12)
    assert m["bias"][1] > 0.01
    assert m["std"][0] > m["std"][2]
    samples = drift.sample_kl_estimates(p, q, 200_000, seed=0)
    np.testing.assert_allclose(samples.mean(1), m["mean"], atol=0.01)
    np.testing.assert_allclose(samples.std(1), m["std"], rtol=0.02)


def test_estimators_validate_inputs():
    with pytest.raises(ValueError):
        drift.kl_estimator_moments(np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="sum to 1"):
        drift.kl_estimator_moments(np.array([0.5, 0.6]), np.array([0.5, 0.5]))
