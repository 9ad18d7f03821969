"""Compounding measured step by step, and the gradient each divergence gives at a slip."""

import math

import pytest
import torch

from opd_lib.lab.slips import conditional_errors, gradient_at_slips, slip_mask, step_outcomes
from opd_lib.lab.tasks import RunningSum

TASK = RunningSum(2, 6, style="tagged")
EX = TASK.from_digits([3, 4, 5, 2])  # 3+b4=7,7+c5=2,2+d2=4#4


def test_step_outcomes_compare_each_written_result_with_the_true_running_value():
    assert EX.completion == "3+b4=7,7+c5=2,2+d2=4#4"
    assert step_outcomes(EX, EX.completion) == [True, True, True]
    carried = "3+b4=8,8+c5=3,3+d2=5#5"  # slips at step 1 and builds on it
    recovered = "3+b4=8,7+c5=2,2+d2=4#4"  # slips at step 1 and goes back to the true value
    assert step_outcomes(EX, carried) == [False, False, False]
    assert step_outcomes(EX, recovered) == [False, True, True]
    assert step_outcomes(EX, "3+b4=7#7") == [True, False, False]  # missing steps are wrong
    assert step_outcomes(EX, "3+b4=7,7+c5=x,2+d2=4#4") == [True, False, True]  # malformed
    plain = RunningSum(2, 6).from_digits([3, 4, 5, 2])
    assert step_outcomes(plain, "3+4=7,7+5=1,1+2=3#3") == [True, False, False]


def test_conditional_errors_separate_carrying_from_recovering():
    carried = step_outcomes(EX, "3+b4=8,8+c5=3,3+d2=5#5")
    recovered = step_outcomes(EX, "3+b4=8,7+c5=2,2+d2=4#4")
    rates = conditional_errors([carried, carried])
    assert rates["p_wrong_after_wrong"] == 1.0 and rates["n_after_wrong"] == 4
    assert math.isnan(rates["p_wrong_after_right"]) and rates["n_after_right"] == 0
    rates = conditional_errors([recovered, carried, [True, True, False]])
    # pairs after a wrong step: (F,T) (F,F) (F,F) -> 2/3; after a right one: (T,T) (T,T) (T,F)
    assert rates["p_wrong_after_wrong"] == pytest.approx(2 / 3)
    assert rates["p_wrong_after_right"] == pytest.approx(1 / 3)
    assert (rates["n_after_wrong"], rates["n_after_right"]) == (3, 3)


def test_gradient_at_a_confident_mistake_vanishes_for_reverse_kl_only():
    """One slip token where the student is sure and wrong (q = (0.999, 0.001), teacher
    p = (0.001, 0.999)) and one ordinary token where they agree. By hand, with
    KL = 0.998 ln 999 = 6.8929 both ways: reverse KL's gradient q (log q - log p - KL) =
    (0.999 (ln 999 - KL), 0.001 (-ln 999 - KL)), norm 0.019516; forward KL's q - p =
    (0.998, -0.998), norm 0.998 sqrt 2 = 1.41139; at the agreeing token both are 0."""
    sure_wrong = torch.log(torch.tensor([0.999, 0.001]))
    student = torch.stack([sure_wrong, torch.zeros(2)])[None]  # [1, 2, V=2]
    teacher = torch.stack([sure_wrong.flip(0), torch.zeros(2)])[None]
    mask = torch.tensor([[True, True]])
    at_slip = torch.tensor([[True, False]])
    rows = {r["kind"]: r for r in gradient_at_slips(student, teacher, mask, at_slip)}
    kl = 0.998 * math.log(999)
    assert rows["rkl"]["div_slip"] == pytest.approx(kl, rel=1e-5)
    assert rows["fkl"]["div_slip"] == pytest.approx(kl, rel=1e-5)
    assert rows["rkl"]["grad_slip"] == pytest.approx(0.019516, rel=1e-4)
    assert rows["fkl"]["grad_slip"] == pytest.approx(0.998 * math.sqrt(2), rel=1e-5)
    for r in rows.values():
        assert r["grad_other"] == pytest.approx(0.0, abs=1e-7) and r["div_other"] == 0.0
        assert (r["n_slip"], r["n_other"]) == (1, 1)
    assert rows["jsd"]["grad_slip"] < rows["rkl"]["grad_slip"] < rows["fkl"]["grad_slip"]
    with pytest.raises(ValueError, match="at_slip"):
        gradient_at_slips(student, teacher, mask, mask)  # nothing left to compare with


def test_slip_mask_marks_the_first_token_after_the_first_slip():
    texts = ["3+b4=8,8+c5=3,3+d2=5#5", EX.completion, "3+b4=7,7+c5=2,2+d2=5#5"]
    mask = slip_mask(TASK, [EX, EX, EX], texts, 30)
    assert mask[0].nonzero().flatten().tolist() == [len("3+b4=8,")]  # where "8+c5" starts
    assert not mask[1].any()  # no slip
    assert not mask[2].any()  # the last step slipped: no step after it
