"""The knobs the lab's second-edition experiments turn: DART-style perturbed data
(``data_perturb``), GRPO's KL anchor (``rl_kl``) and execution noise (``opd_lib.lab.noise``)."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from opd_lib.lab import Config, Trainer
from opd_lib.lab.noise import digit_noise
from opd_lib.lab.tasks import ALPHABET
from opd_lib.tokenizers import char_tokenizer


@pytest.fixture(scope="module")
def pair(char_pair):
    return char_pair


def make(pair, **kw) -> Trainer:
    base = dict(
        min_len=3, max_len=4, eval_lengths=(3,), eval_size=4, batch_size=4, micro_batch_size=4,
        progress=False, lr=1e-2, steps=3, group_size=2, retention=False,
    )  # fmt: skip
    fresh = type(pair)(copy.deepcopy(pair.teacher), copy.deepcopy(pair.student), pair.tokenizer)
    return Trainer(Config(**(base | kw)), fresh)


def test_data_perturb_breaks_the_stated_share_and_zero_changes_nothing(pair):
    off = make(pair, method="sft", data_perturb=0.0)
    rng = random.Random(off.config.seed)  # the trainer's data RNG, drawn as before the knob
    assert [off.draw() for _ in range(20)] == [off.task.sample(rng) for _ in range(20)]
    t = make(pair, method="sft", data_perturb=0.5)
    draws = [t.draw() for _ in range(400)]
    broken = [ex for ex in draws if ex.prefix]
    assert 0.4 < len(broken) / len(draws) < 0.6
    for ex in broken:  # the broken step is context; the target recovers to the right answer
        assert ex.completion.startswith(ex.prefix)
        assert t.task.verify(ex, ex.completion).correct
        assert not t.task.verify(ex, ex.completion).trace_ok


def test_rl_kl_anchor_is_zero_at_the_start_and_counts_once_the_student_moves(pair):
    torch.manual_seed(0)
    anchored, plain = make(pair, method="rl", rl_kl=1.0), make(pair, method="rl")
    first_a, first_p = anchored.train_step(), plain.train_step()
    # step 1: the reference is the student itself, so the k3 penalty is exactly 0
    assert first_a["divergence"] == pytest.approx(0.0, abs=1e-6)
    assert first_a["loss"] == pytest.approx(first_p["loss"], abs=1e-5)
    reference = copy.deepcopy(anchored.reference.state_dict())
    with torch.no_grad():  # move the student away from where it started
        for p in anchored.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    step = anchored.train_step()
    assert step["divergence"] > 1e-4 and step["loss"] > 0  # k3 >= 0, and > 0 once they differ
    for name, value in anchored.reference.state_dict().items():  # the anchor stays put
        assert torch.equal(value, reference[name])


def test_bad_knobs_are_named():
    with pytest.raises(ValueError, match="rl_kl"):
        Config(method="rl", rl_kl=-0.1)
    with pytest.raises(ValueError, match="data_perturb"):
        Config(data_perturb=1.5)


def test_digit_noise_flips_only_digits_after_equals_at_the_stated_rate():
    tok = char_tokenizer(ALPHABET)
    ids = {c: tok.convert_tokens_to_ids(c) for c in "=+3"}
    rows, steps = 2000, 2
    corrupt = digit_noise(tok, 0.3, rows, steps, torch.Generator().manual_seed(0))
    three = torch.full((rows,), ids["3"])
    after_eq = corrupt(torch.full((rows,), ids["="]), three)
    flipped = after_eq != three
    assert 0.27 < flipped.float().mean() < 0.33
    assert set(tok.convert_ids_to_tokens(after_eq[flipped].tolist())) <= set("012456789")
    after_plus = corrupt(torch.full((rows,), ids["+"]), three)  # the next step: not after "="
    assert torch.equal(after_plus, three)
    assert digit_noise(tok, 0.0, rows, steps, torch.Generator()) is None
    with pytest.raises(ValueError, match="rate"):
        digit_noise(tok, 1.2, rows, steps, torch.Generator())


def test_eval_noise_is_the_same_for_every_model(pair):
    """Evaluation noise is drawn up front from a fixed seed, not from the run's generators: two
    evaluations of one model meet the same slips and agree exactly."""
    t = make(pair, method="opd", eval_noise=0.5, eval_temperature=0.0)
    first, second = (json.dumps(t.evaluate(), sort_keys=True) for _ in range(2))
    assert first == second  # (as JSON: a rate with no cases is NaN, and NaN != NaN)
