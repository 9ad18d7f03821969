"""The Chapter 8 grader accepts the right advantage and rejects known-wrong ones."""

import pytest

from opd_lib.checks import GradingError
from opd_lib.checks.ch08 import check_advantages, check_meta_surrogate


def right(lp_s, lp_t, r, b, lam):
    return lam * (lp_t - lp_s) + (1 - lam) * (r - b)[:, None]


def test_accepts_the_right_answer(capsys):
    check_advantages(right)
    assert capsys.readouterr().out == "Correct: advantages matches the reference.\n"


@pytest.mark.parametrize(
    "wrong",
    [
        lambda lp_s, lp_t, r, b, lam: lam * (lp_s - lp_t) + (1 - lam) * (r - b)[:, None],  # sign
        lambda lp_s, lp_t, r, b, lam: (1 - lam) * (lp_t - lp_s) + lam * (r - b)[:, None],  # swap
        lambda lp_s, lp_t, r, b, lam: lam * (lp_t - lp_s) + (1 - lam) * r[:, None],  # no baseline
        lambda lp_s, lp_t, r, b, lam: lam * (lp_t - lp_s) + (1 - lam) * (r - b),  # no broadcast
        lambda lp_s, lp_t, r, b, lam: lam * lp_t + (1 - lam) * (r - b)[:, None],  # no -log pi
        lambda lp_s, lp_t, r, b, lam: "advantage",
    ],
)
def test_rejects_wrong_answers(wrong):
    with pytest.raises(GradingError):
        check_advantages(wrong)


# --- the three-dial surrogate ---------------------------------------------------------------


def surrogate_right(lp_s, lp_t, r, b, mask, lam):
    a = lam * (lp_t - lp_s) + (1 - lam) * (r - b)[:, None]
    return -(a.detach() * lp_s)[mask].sum() / mask.sum()


def test_meta_surrogate_accepts_the_right_answer(capsys):
    check_meta_surrogate(surrogate_right)
    assert capsys.readouterr().out == "Correct: meta_surrogate matches the reference.\n"


def _adv(lp_s, lp_t, r, b, lam):
    return lam * (lp_t - lp_s) + (1 - lam) * (r - b)[:, None]


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda s, t, r, b, m, lam: -(_adv(s, t, r, b, lam).detach() * s).mean(), "masked"),
        (
            lambda s, t, r, b, m, lam: (
                -((_adv(s, t, r, b, lam).detach() * s * m).sum(1) / m.sum(1)).mean()
            ),
            "mean per sequence",
        ),
        (lambda s, t, r, b, m, lam: -surrogate_right(s, t, r, b, m, lam), "sign"),
        (lambda s, t, r, b, m, lam: surrogate_right(s, t, r, b, m, lam) * m.sum(), "sum"),
        (lambda s, t, r, b, m, lam: -(_adv(s, t, r, b, lam) * s)[m].sum() / m.sum(), "detach"),
        (lambda s, t, r, b, m, lam: surrogate_right(s, t, r, b, m, lam).detach(), "no gradient"),
        (lambda s, t, r, b, m, lam: _adv(s, t, r, b, lam), "scalar"),
    ],
)
def test_meta_surrogate_rejects_wrong_answers_and_says_why(wrong, hint):
    with pytest.raises(GradingError, match=hint):
        check_meta_surrogate(wrong)


# ------------------------------------------------------------------ the pipeline figure's question


def pipeline_answer():
    from opd_lib.sim import pipeline

    return "RL", float(pipeline.train_pipeline("RL").coverage[-1])


def test_pipeline_reading_accepts_the_figures_values(capsys):
    from opd_lib.checks.ch08 import check_pipeline_reading

    check_pipeline_reading(pipeline_answer)
    check_pipeline_reading(lambda: ("rl", pipeline_answer()[1]))  # any case
    assert capsys.readouterr().out.count("Correct: pipeline_reading") == 2


@pytest.mark.parametrize(
    "wrong",
    [
        lambda: ("OPSD", pipeline_answer()[1]),  # the second lowest
        lambda: ("SFT", pipeline_answer()[1]),
        lambda: ("RL", 100 * pipeline_answer()[1]),  # a percentage
        lambda: ("RL", pipeline_answer()[1] + 0.05),
        lambda: ("RL", 0.5 * (1 + pipeline_answer()[1])),  # halfway back to full coverage
        lambda: ("RL",),
        lambda: (None, 0.5),
        lambda: ("RL", "half"),
    ],
)
def test_pipeline_reading_rejects_wrong_readings(wrong):
    from opd_lib.checks.ch08 import check_pipeline_reading

    with pytest.raises(GradingError):
        check_pipeline_reading(wrong)
