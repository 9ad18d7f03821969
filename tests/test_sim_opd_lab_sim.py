"""The OPD lab simulator: on-policy methods beat off-policy KD at long lengths."""

import numpy as np
import pytest

from opd_lib.sim import gkd_toy, opd_lab_sim


def test_lab_shows_the_dagger_gap():
    res = opd_lab_sim.run_lab(lengths=[5, 20, 60], steps=60)
    off, on = res.mistakes["off-policy KD"], res.mistakes["GKD lam=1"]
    assert off[-1] > 2 * on[-1]
    # on-policy mistakes grow about linearly; off-policy ones faster
    assert on[-1] / on[0] == pytest.approx(12, rel=0.25)
    assert off[-1] / off[0] > 15
    assert set(res.eps) == set(opd_lab_sim.TOY_METHODS)


def test_spin_is_deterministic_and_learns():
    a = opd_lab_sim.train_spin_toy(steps=20, rounds=2, seed=3)
    b = opd_lab_sim.train_spin_toy(steps=20, rounds=2, seed=3)
    assert np.array_equal(a.student, b.student)
    assert a.final.mistakes < a.metrics[0].mistakes


def test_training_error_rate_of_the_teacher_is_its_noise():
    t = gkd_toy.teacher_table(0.005)
    assert opd_lab_sim.training_error_rate(t, t, 10) == pytest.approx(0.005)


def test_bad_input():
    with pytest.raises(ValueError):
        opd_lab_sim.train_method("dpo")
    with pytest.raises(ValueError):
        opd_lab_sim.train_spin_toy(steps=2, rounds=5)
