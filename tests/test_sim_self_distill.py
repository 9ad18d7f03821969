import numpy as np
import pytest
import torch

from opd_lib.sim import self_distill as sd


def test_examples_are_deterministic_and_the_key_comes_from_the_hint():
    a = sd.hinted_copy_examples(5, seed=3)
    assert a == sd.hinted_copy_examples(5, seed=3)
    for prompt, hint, answer in zip(*a, strict=True):
        assert answer == prompt[:-1] + " is " + hint[1] + "."
        assert answer[sd.KEY_AT] == hint[1]
    with pytest.raises(ValueError):
        sd.hinted_copy_examples(0)


def test_clipped_updates_on_the_seed_pivot():
    s, t = sd.pivot_example_logits()
    c = sd.clipped_updates(s, t, max_value=0.05)
    assert c.loss["none"] > 2.0
    assert c.loss["token"] == pytest.approx(0.05)
    assert c.loss["pointwise"] < 0
    assert c.grad_norm["token"] == 0.0
    assert 0 < c.grad_norm["pointwise"] < c.grad_norm["none"]


def test_synthetic_batch_has_one_dominant_pivot():
    s, t = sd.synthetic_pivot_batch(n_tokens=20, seed=0)
    c = sd.clipped_updates(s, t, max_value=0.1)
    d = c.per_token_value["none"][0]
    assert int(d.argmax()) == 10
    assert d[10] > 0.5 * d.sum()
    with pytest.raises(ValueError):
        sd.synthetic_pivot_batch(pivot_student_prob=0.0)


def test_spin_converges_to_the_data_and_cannot_exceed_it():
    p_data = np.array([0.5, 0.3, 0.15, 0.05])
    reward = np.array([1.0, 0.5, 0.0, 0.0])
    worse = sd.spin_rounds(p_data, np.zeros(4), rounds=6, reward=reward)
    better = sd.spin_rounds(p_data, np.array([4.0, 0, 0, 0]), rounds=6, reward=reward)
    data_reward = p_data @ reward
    for h in (worse, better):
        assert h.tv[-1] < 0.05 < h.tv[0]
        assert h.grad_norm[-1] < 0.2 * h.grad_norm[0]
        assert abs(h.reward[-1] - data_reward) < 0.03
    assert better.reward[0] > data_reward + 0.2  # started above the data, pulled down to it
    with pytest.raises(ValueError):
        sd.spin_rounds(np.array([0.5, 0.6]), np.zeros(2))


def test_sd_zero_needs_the_verifier():
    h = sd.sd_zero_rounds(n_problems=20, rounds=4, seed=0)
    assert np.all(np.diff(h.accuracy) > 0)
    assert np.allclose(h.accuracy_no_reward, h.accuracy_no_reward[0])
    assert h.accuracy[0] == h.accuracy_no_reward[0]


def test_hinted_model_puts_the_divergence_on_the_key():
    torch.manual_seed(0)
    model, tok, losses = sd.train_hinted_model()
    assert losses[-10:].mean() < 0.5 * losses[:10].mean()
    r = sd.self_teacher_divergence(model, tok, n=8)
    assert (r.divergence.argmax(dim=1) == sd.KEY_AT).float().mean() >= 0.75
