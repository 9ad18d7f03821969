"""GSM8K for the hub lab: the extractor on realistic outputs, targets, prompt, template, lengths."""

from __future__ import annotations

import pytest

from opd_lib.lab.gsm8k import (
    INSTRUCTION,
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    SAMPLE_RECORDS,
    clean_solution,
    extract_answer,
    format_prompt,
    normalise_number,
    same_number,
)
from opd_lib.lab.tasks import (
    GSM8K,
    check_same_template,
    gsm8k_example,
    gsm8k_examples,
    render_prompt,
)
from opd_lib.lab.tokenizers import CHATML_TEMPLATE, char_tokenizer, qwen3_tokenizer

# (model output, the answer a careful reader takes from it; None: no answer stated)
OUTPUTS = [
    # \boxed{}
    ("Step 1: 3 * 12 = 36\nStep 2: 36 - 7 = 29\n\n**Final Answer**\n$$\\boxed{29}$$", "29"),
    ("So she has $\\boxed{65}$ dollars left.", "65"),
    ("The final answer is \\boxed{1,344}.", "1344"),
    ("Total: \\boxed{\\$1,200}", "1200"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
    ("\\boxed{\\text{12 apples}}", "12"),
    ("The answer is \\boxed{12}.\n\nCheck: 12 + 30 = 42 ✓", "12"),
    ("First guess \\boxed{10}. Wait, I forgot the tax.\nCorrected: \\boxed{11}", "11"),
    ("The temperature is \\boxed{-11} degrees.", "-11"),
    ("\\boxed{\\frac{3}{4}} of a cup", "0.75"),
    ("\\boxed{\\dfrac{15}{2}}", "7.5"),
    ("She needs \\boxed{1.875} cups.", "1.875"),
    ("The percentage is \\boxed{40\\%}.", "40"),
    ("He earns \\boxed{540.00}.", "540"),
    ("**Answer:** $\\boxed{12}$", "12"),
    ("\\boxed{ 7 }", "7"),
    ("Check 36 - 7 = 29.\n\\boxed{29}\nVerification: 29 + 7 = 36.", "29"),
    # #### lines (GSM8K's format), and markdown #### headings that are not answers
    ("Natalia sold 48/2 = 24 clips.\n48 + 24 = 72\n#### 72", "72"),
    (
        "#### Step 1: Pencils bought\n3 × 12 = 36\n#### Step 2: Give away\n36 - 7 = 29\n#### 29",
        "29",
    ),
    ("#### 1. Compute the total\n5 + 8 = 13\n#### 2. Double it\n13 × 2 = 26\n\n#### 26", "26"),
    ("It makes 96 boxes.\n#### $1,344", "1344"),
    ("#### -5", "-5"),
    ("#### 3.50 dollars", "3.5"),
    ("#### **42**", "42"),
    ("#### 600 students\nCheck: 500 + 150 + 600 = 1250 ✓", "600"),
    ("#### 30 minutes.", "30"),
    # "the answer is", bold, "Answer:"
    ("Adding up, the answer is 164.", "164"),
    ("So the final answer is: 445", "445"),
    ("**Final Answer:** 360", "360"),
    ("The answer is $18.", "18"),
    ("The answer is \\$2,050.75.", "2050.75"),
    ("Answer: −3", "-3"),
    ("The answer is 12, since 42 - 30 = 12.", "12"),
    ("The answer is 0.5 hours.", "0.5"),
    ("The answer is 3/4.", "0.75"),
    ("The answer is 50%.", "50"),
    ("She had 10 apples, ate 2, then bought 5.\nThe answer is 13 apples.", "13"),
    # no stated answer, or truncated: no credit
    ("Step 1: 3 × 12 = 36\nStep 2: He sells 30, so", None),
    ("The final answer is \\boxed{1", None),
    ("She saves 315 - 120 = 195 dollars per 1 week.", None),
    ("#### Step 1: Find the total\n42 - 30 = 12", None),
    ("Let's think. 12 apples and 7 pears make", None),
    ("", None),
    ("The answer is", None),
    ("\\boxed{}", None),
    ("**Answer:**", None),
]


@pytest.mark.parametrize(("text", "expected"), OUTPUTS)
def test_extractor_on_realistic_outputs(text, expected):
    assert extract_answer(text) == expected


def test_extractor_cases_are_many_and_varied():
    assert len(OUTPUTS) >= 40
    assert sum(e is None for _, e in OUTPUTS) >= 8


def test_lenient_reads_the_last_number_only_when_asked():
    text = "She saves 315 - 120 = 195 dollars per 1 week."
    assert extract_answer(text) is None
    assert extract_answer(text, lenient=True) == "1"  # why the strict reading is the default
    assert extract_answer("The answer is \\boxed{12}. Check: 42", lenient=True) == "12"


def test_normalise_and_compare_numbers():
    assert normalise_number("$1,200.00") == "1200"
    assert normalise_number("−5") == "-5"
    assert normalise_number("\\frac{1}{3}") == "0.3333333333"
    assert normalise_number("no number") is None
    assert same_number("0.3333333333", "1/3") and same_number("72", "72.0")
    assert not same_number("71", "72") and not same_number(None, "72")
    with pytest.raises(TypeError, match="text"):
        extract_answer(42)


def test_verify_is_strict_and_right():
    ex = gsm8k_example(SAMPLE_RECORDS[0]["question"], SAMPLE_RECORDS[0]["answer"])
    task = GSM8K([ex])
    assert task.verify(ex, "36 - 7 = 29, so \\boxed{29}").correct
    assert not task.verify(ex, "36 - 7 = 29, so \\boxed{28}").correct
    assert not task.verify(ex, "She has 36 - 7 = 29 pencils").correct  # no stated answer
    assert task.verify(ex, ex.completion).reward == 1.0  # the training target scores


def test_targets_drop_annotations_and_end_in_the_prompted_format():
    target, answer = clean_solution(SAMPLE_RECORDS[9]["answer"])
    assert answer == "1344" and "<<" not in target and "####" not in target
    assert target.endswith("The final answer is \\boxed{1344}.")
    assert extract_answer(target) == "1344"
    for record in SAMPLE_RECORDS:
        ex = gsm8k_example(record["question"], record["answer"])
        assert "<<" not in ex.completion and ">>" not in ex.completion
        assert ex.prompt.endswith(INSTRUCTION) and ex.prompt.startswith(record["question"][:20])
        assert same_number(extract_answer(ex.completion), record["answer"].split("####")[-1])
        assert "<<" not in ex.hint
    with pytest.raises(ValueError, match="####"):
        clean_solution("no final line")
    with pytest.raises(ValueError, match="question"):
        format_prompt("  ")


def test_thinking_off_and_same_template_for_both_models():
    qwen = qwen3_tokenizer()
    text = check_same_template(qwen, qwen)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert INSTRUCTION in text
    with pytest.raises(ValueError, match="differently"):
        check_same_template(qwen, char_tokenizer())  # no think block in the char template
    ignores_thinking = char_tokenizer()  # a fresh object (qwen3_tokenizer() is shared: cached)
    ignores_thinking.chat_template = CHATML_TEMPLATE + "{# enable_thinking: ignored #}"
    with pytest.raises(ValueError, match="enable_thinking"):
        check_same_template(ignores_thinking, ignores_thinking)


def test_lengths_fit_the_budgets():
    """Measured on the sample records with the offline Qwen3 tokenizer: every chat-rendered
    prompt fits MAX_PROMPT_TOKENS and every cleaned target fits MAX_NEW_TOKENS with a wide margin
    (model answers are longer than GSM8K's references; see ``MAX_NEW_TOKENS``)."""
    qwen = qwen3_tokenizer()
    examples = gsm8k_examples(SAMPLE_RECORDS).examples
    prompts = [len(qwen(render_prompt(qwen, e.prompt))["input_ids"]) for e in examples]
    targets = [len(qwen(e.completion)["input_ids"]) for e in examples]
    assert max(prompts) <= MAX_PROMPT_TOKENS // 2
    assert max(targets) < 100 <= MAX_NEW_TOKENS // 4
