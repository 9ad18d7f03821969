import numpy as np
import pytest

from opd_lib import divergences
from opd_lib.sim import fdiv

LIBRARY = {
    "fkl": divergences.forward_kl,
    "rkl": divergences.reverse_kl,
    "jsd": divergences.generalized_jsd,
    "tv": divergences.total_variation,
}


@pytest.mark.parametrize("kind", sorted(LIBRARY))
def test_generators_reproduce_the_library(kind):
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(7), size=5), rng.dirichlet(np.ones(7), size=5)
    np.testing.assert_allclose(fdiv.f_divergence(p, q, fdiv.GENERATORS[kind]), LIBRARY[kind](p, q))


@pytest.mark.parametrize("kind", sorted(LIBRARY))
def test_generators_are_zero_at_one(kind):
    assert fdiv.GENERATORS[kind](np.array(1.0)) == pytest.approx(0.0)


@pytest.mark.parametrize("beta", [0.05, 0.3, 0.9])
def test_generalized_jsd_generator(beta):
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    value = fdiv.f_divergence(p, q, fdiv.jsd_generator(beta))
    assert value == pytest.approx(float(divergences.generalized_jsd(p, q, beta)))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="beta"):
        fdiv.jsd_generator(0.0)
    with pytest.raises(ValueError, match="positive"):
        fdiv.f_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5]), fdiv.GENERATORS["fkl"])
    teacher = fdiv.bimodal_teacher()
    with pytest.raises(ValueError, match="divergence"):
        fdiv.fit_student(teacher.probs, teacher.x, "hellinger")
    with pytest.raises(ValueError, match="centers"):
        fdiv.bimodal_teacher(centers=(3.0, -3.0))


@pytest.fixture(scope="module")
def teacher():
    return fdiv.bimodal_teacher()


def test_teacher_is_bimodal_with_an_empty_gap(teacher):
    np.testing.assert_allclose(teacher.probs.sum(), 1.0)
    s = fdiv.mode_summary(teacher, teacher.probs)
    assert s["left"] == pytest.approx(0.6, abs=0.01) and s["teacher_gap"] < 0.01


def test_forward_kl_covers_and_reverse_kl_seeks(teacher):
    fkl = fdiv.fit_student(teacher.probs, teacher.x, "fkl", init_mean=1.5)
    s = fdiv.mode_summary(teacher, fkl.probs)
    assert s["gap"] > 20 * s["teacher_gap"] and s["left"] > 0.3 and s["right"] > 0.2
    for init, side in ((-1.5, "left"), (1.5, "right")):
        rkl = fdiv.fit_student(teacher.probs, teacher.x, "rkl", init_mean=init)
        s = fdiv.mode_summary(teacher, rkl.probs)
        assert s[side] > 0.98 and s["teacher_at_peak"] > 0.6
        assert rkl.std == pytest.approx(0.6, abs=0.05)


def test_fit_decreases_the_loss_and_is_deterministic(teacher):
    a = fdiv.fit_student(teacher.probs, teacher.x, "jsd", beta=0.3, steps=50, seed=4)
    b = fdiv.fit_student(teacher.probs, teacher.x, "jsd", beta=0.3, steps=50, seed=4)
    assert a.losses[-1] < a.losses[0]
    np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_allclose(a.probs.sum(), 1.0)
