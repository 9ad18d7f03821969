"""The lab's tasks: the running-sum verifier, perturbed (recovery) traces, retention, GSM8K."""

import random

import pytest

from opd_lib.lab.tasks import (
    ALPHABET,
    Example,
    Reverse,
    RunningSum,
    extract_gsm8k_answer,
    get_task,
    gsm8k_correct,
    gsm8k_example,
    make_examples,
    render_prompt,
)
from opd_lib.lab.tokenizers import char_tokenizer

TASK = RunningSum(2, 6)


def test_trace_format_and_answer():
    ex = TASK.from_digits([3, 4, 5, 2])
    assert ex.prompt == "sum 3452"
    assert ex.completion == "3+4=7,7+5=2,2+2=4#4"
    assert ex.answer == "4" and ex.length == 4
    assert ex.hinted_prompt() == "sum 3452 (trace 3+4=7,7+5=2,2+2=4#4)"
    assert RunningSum(hint="answer").from_digits([3, 4]).hinted_prompt() == "sum 34 (answer 7)"


def test_verifier_accepts_every_reference_trace():
    for ex in make_examples(TASK, 200, seed=1):
        v = TASK.verify(ex, ex.completion)
        assert v.correct and v.trace_ok and v.n_bad_steps == 0 and v.reward == 1.0
        assert v.n_steps == ex.length - 1


@pytest.mark.parametrize(
    "text, correct, trace_ok, bad",
    [
        ("3+4=7,7+5=2,2+2=4#4", True, True, 0),
        (" 3+4=7,7+5=2,2+2=4#4 ", True, True, 0),  # surrounding whitespace is tolerated
        ("3+4=7,7+5=2,2+2=4#5", False, False, 0),  # wrong answer, right steps
        ("3+4=8,8+5=3,3+2=5#5", False, False, 3),  # an early slip that propagates
        ("3+4=8,7+5=2,2+2=4#4", True, False, 1),  # a slip, recovered: answer right, trace not
        ("3+4=7,7+6=3,3+2=5#5", False, False, 2),  # wrong digit copied from the prompt
        ("3+4=7,2+2=4#4", True, False, 2),  # a step skipped
        ("3+4=7,7+5=2,2+2=4", False, False, 0),  # no answer
        ("3+4=7,7+5=2,2+2=4,4+0=4#4", True, False, 0),  # an extra step
        ("", False, False, 3),
        ("#4", True, False, 3),
        ("garbage", False, False, 3),
    ],
)
def test_verifier_judges_traces(text, correct, trace_ok, bad):
    ex = TASK.from_digits([3, 4, 5, 2])
    v = TASK.verify(ex, text)
    assert (v.correct, v.trace_ok, v.n_bad_steps) == (correct, trace_ok, bad)


def test_perturbed_prefix_breaks_one_step_and_recovers():
    rng = random.Random(0)
    seen_positions = set()
    for ex in make_examples(TASK, 100, seed=2, length=5):
        p = TASK.perturbed(ex, rng)
        assert p.prefix and p.completion.startswith(p.prefix) and p.target
        assert p.target == p.completion[len(p.prefix) :]
        v = TASK.verify(p, p.completion)
        assert v.correct and not v.trace_ok and v.n_bad_steps == 1  # exactly the broken step
        seen_positions.add(p.prefix.count(","))
        # after the broken step the continuation is the reference's continuation
        assert ex.completion.endswith(p.target)
    assert len(seen_positions) > 1
    short = TASK.from_digits([1, 2])
    assert TASK.perturbed(short, rng) == short  # one step: nothing to recover into


def test_make_examples_perturb_fraction_and_determinism():
    a = make_examples(TASK, 50, seed=3, perturb=0.5)
    assert a == make_examples(TASK, 50, seed=3, perturb=0.5)
    assert 10 < sum(bool(e.prefix) for e in a) < 40
    with pytest.raises(ValueError, match="perturb"):
        make_examples(TASK, 1, seed=0, perturb=1.5)


def test_retention_task():
    task = Reverse()
    ex = task.sample(random.Random(0))
    assert ex.prompt.startswith("rev ") and ex.completion == ex.prompt[4:][::-1]
    assert task.verify(ex, ex.completion).correct
    assert not task.verify(ex, ex.completion + "x").correct


def test_prompts_and_traces_fit_the_char_tokenizer():
    tok = char_tokenizer(ALPHABET)
    for ex in make_examples(TASK, 20, seed=4) + make_examples(Reverse(), 20, seed=4):
        for text in (ex.completion, ex.hinted_prompt()):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids and tok.decode(ids) == text
    rendered = render_prompt(tok, "sum 12")
    assert rendered == "<|im_start|>user\nsum 12<|im_end|>\n<|im_start|>assistant\n"


def test_bad_input():
    with pytest.raises(ValueError, match="min_len"):
        RunningSum(1, 4)
    with pytest.raises(ValueError, match="hint"):
        RunningSum(hint="nope")
    with pytest.raises(ValueError, match="digits"):
        TASK.from_digits([3])
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")
    with pytest.raises(ValueError, match="prefix"):
        Example("sum", "p", "abc", "c", prefix="x")


SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


def test_gsm8k_answer_extraction_and_checker():
    """Strict by default (the robust extractor of ``opd_lib.lab.gsm8k``): an answer counts only
    when stated (``\\boxed{}``, a ``#### <number>`` line, "answer is"); ``lenient`` adds the
    last number of an unformatted text."""
    assert extract_gsm8k_answer(SOLUTION) == "72"
    assert extract_gsm8k_answer("so the total is\n#### 1,234") == "1234"
    assert extract_gsm8k_answer("so the total is #### 1,234") is None  # not a #### line
    assert extract_gsm8k_answer("#### -5") == "-5"
    assert extract_gsm8k_answer("The answer is 3.50 dollars.") == "3.5"
    assert extract_gsm8k_answer("The answer is \\boxed{12}.\n\nCheck: 12 + 30 = 42") == "12"
    assert extract_gsm8k_answer("#### Step 1: add\n42 - 30 = 12") is None  # a heading
    assert extract_gsm8k_answer("We get 12 apples, then 7.") is None  # no stated answer
    assert extract_gsm8k_answer("We get 12 apples, then 7.", lenient=True) == "7"
    assert extract_gsm8k_answer("no numbers here", lenient=True) is None
    assert not gsm8k_correct("... so she has 72 clips.", "72")
    assert gsm8k_correct("... so she has 72 clips.", "72", lenient=True)
    assert gsm8k_correct("#### 72.0", "72")
    assert not gsm8k_correct("#### 71", "72")
    ex = gsm8k_example("How many clips?", SOLUTION)
    assert ex.answer == "72" and ex.task == "gsm8k" and "72" in ex.hint
    with pytest.raises(ValueError, match="####"):
        gsm8k_example("q", "no answer line")


def test_tagged_style_format_verifier_and_perturbation():
    task = RunningSum(2, 6, style="tagged")
    ex = task.from_digits([3, 4, 5, 2])
    assert ex.prompt == "sum a3b4c5d2" and ex.completion == "3+b4=7,7+c5=2,2+d2=4#4"
    assert task.verify(ex, ex.completion).trace_ok
    assert task.verify(ex, "3+c4=7,7+c5=2,2+d2=4#4").n_bad_steps == 1  # wrong tag
    assert task.verify(ex, "3+4=7,7+5=2,2+2=4#4").n_bad_steps == 3  # plain steps don't count
    for e in make_examples(task, 50, seed=5, length=5):
        p = task.perturbed(e, random.Random(0))
        v = task.verify(p, p.completion)
        assert v.correct and v.n_bad_steps == 1
    with pytest.raises(ValueError, match="style"):
        RunningSum(style="fancy")


def test_first_slip_finds_the_state_after_a_wrong_sum():
    """Only a slip in the sum itself counts, and only with a next step to recover in."""
    task = RunningSum(2, 6, style="tagged")
    ex = task.from_digits([1, 4, 8, 3])
    assert task.first_slip(ex, ex.completion) is None
    assert task.first_slip(ex, "1+b4=6,6+c8=4,4+d3=7#7") == (7, 5)  # next step at char 7, from 5
    assert task.first_slip(ex, "1+b4=5,5+c8=4,4+d3=7#7") == (14, 3)
    assert task.first_slip(ex, "1+b4=5,5+c8=3,3+d3=5#5") is None  # last step: nothing follows
    assert task.first_slip(ex, "1+b5=6,6+c8=4,4+d3=7#7") is None  # a misread digit, not a slip
    assert task.first_slip(ex, "1+b4=6") is None  # cut short
