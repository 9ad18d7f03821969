"""opd_lib.sim.fdiv_capacity: a free-logit student reaches the teacher under every divergence."""

import numpy as np
import pytest

from opd_lib import divergences
from opd_lib.sim import fdiv, fdiv_capacity


@pytest.fixture(scope="module")
def teacher() -> np.ndarray:
    return fdiv.bimodal_teacher(n_points=41).probs


@pytest.mark.parametrize("kind", ["fkl", "rkl", "jsd"])
def test_every_divergence_fits_the_teacher(teacher, kind):
    fit = fdiv_capacity.fit_free_logits(teacher, kind, steps=300)
    assert fit.probs.shape == teacher.shape
    assert np.isclose(fit.probs.sum(), 1.0)
    for name, value in fit.distances.items():
        assert 0.0 <= value < 5e-3, (kind, name, value)
    assert np.abs(fit.probs - teacher).max() < 5e-3
    # The loss fell by orders of magnitude from the random start.
    assert fit.losses[-1] < 1e-2 * fit.losses[0]


def test_distances_are_the_library_values(teacher):
    fit = fdiv_capacity.fit_free_logits(teacher, "fkl", steps=5)
    rkl = float(divergences.reverse_kl(teacher, fit.probs))
    assert fit.distances["rkl"] == pytest.approx(rkl)
    assert fit.distances["tv"] == pytest.approx(0.5 * np.abs(teacher - fit.probs).sum())


def test_deterministic_and_seeded(teacher):
    a = fdiv_capacity.fit_free_logits(teacher, "rkl", steps=20, seed=3)
    b = fdiv_capacity.fit_free_logits(teacher, "rkl", steps=20, seed=3)
    c = fdiv_capacity.fit_free_logits(teacher, "rkl", steps=20, seed=4)
    np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.probs, c.probs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"teacher_probs": np.array([0.5, 0.6])}, "teacher_probs"),
        ({"teacher_probs": np.array([1.0, 0.0])}, "teacher_probs"),
        ({"teacher_probs": np.ones((2, 2)) / 4}, "teacher_probs"),
        ({"divergence": "kl"}, "divergence"),
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"init_scale": -1.0}, "init_scale"),
    ],
)
def test_bad_input_is_named(kwargs, name):
    args = {"teacher_probs": np.array([0.3, 0.7]), "divergence": "fkl", **kwargs}
    with pytest.raises(ValueError, match=name):
        fdiv_capacity.fit_free_logits(**args)
