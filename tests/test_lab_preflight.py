"""Tests for opd_lib.lab.preflight: every silent teacher/student mismatch is caught and named."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from opd_lib.lab import (
    PaddedVocabularyWarning,
    PreflightError,
    PreflightReport,
    char_tokenizer,
    preflight,
    qwen3_tokenizer,
    sanity_check,
    tiny_qwen3,
)
from opd_lib.lab.preflight import per_token_forward_kl
from opd_lib.lab.tokenizers import DEFAULT_ALPHABET

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def student(tok):
    return tiny_qwen3(tok, layers=1, hidden=16, seed=1)


@pytest.fixture(scope="module")
def teacher(tok):
    return tiny_qwen3(tok, layers=2, hidden=32, seed=0)


def problems_of(*args, **kwargs) -> tuple[str, ...]:
    with pytest.raises(PreflightError) as info:
        preflight(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    assert str(len(info.value.problems)) in str(info.value)
    return info.value.problems


def test_matching_pair_passes(student, teacher, tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = preflight(student, teacher, tok, tok)
    assert isinstance(report, PreflightReport)
    assert report.tokenizer_size == report.student_vocab_size == report.teacher_vocab_size
    assert (report.eos_token_id, report.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert report.warnings == () and report.sanity_max_kl is None
    assert len(report.checks) == 8 and "passed" in str(report)


def test_different_alphabet(student, teacher, tok):
    other = char_tokenizer(DEFAULT_ALPHABET[::-1])
    (vocab, probes) = problems_of(student, teacher, tok, other, probe_texts=["hello world"])
    assert "vocabularies differ" in vocab
    assert "'hello world'" in probes and "first difference at position 0" in probes
    assert str(tok.encode("hello world", add_special_tokens=False)[:3])[:-1] in probes


def test_model_vocab_size_mismatch(student, tok):
    padded = tiny_qwen3(tok, layers=1, hidden=16, vocab_size=len(tok) + 64)
    (problem,) = problems_of(student, padded, tok, tok)
    assert f"{len(tok)} vs teacher {len(tok) + 64}" in problem
    assert "152064" in problem and "151936" in problem


def test_tokenizer_larger_than_model(teacher, tok):
    small = tiny_qwen3(tok, layers=1, hidden=16, vocab_size=len(tok) - 1)
    problems = problems_of(small, teacher, tok, tok)
    assert any("out of range" in p and "student" in p for p in problems)


def test_eos_mismatch(student, teacher, tok):
    other = copy.deepcopy(tok)
    other.eos_token = "<|endoftext|>"
    (problem,) = problems_of(student, teacher, tok, other)
    assert problem.startswith("EOS ids differ") and "= 2" in problem and "= 0" in problem


def test_pad_mismatch(student, teacher, tok):
    other = copy.deepcopy(tok)
    other.pad_token = "<|im_end|>"
    (problem,) = problems_of(student, teacher, tok, other)
    assert problem.startswith("PAD ids differ")


def test_chat_template_mismatch(student, teacher, tok):
    other = copy.deepcopy(tok)
    other.chat_template = tok.chat_template.replace(
        "'\n' + message['content']", "message['content']"
    )
    (problem,) = problems_of(student, teacher, tok, other)
    assert "chat templates render" in problem


def test_missing_chat_template(student, teacher, tok):
    other = copy.deepcopy(tok)
    other.chat_template = None
    (problem,) = problems_of(student, teacher, tok, other)
    assert "teacher tokenizer has no chat template" in problem
    both = preflight(student, teacher, other, other)
    assert any("skipped" in check for check in both.checks)


def test_teacher_from_another_tokenizer_family(student, tok):
    qwen = qwen3_tokenizer()
    teacher = tiny_qwen3(qwen, layers=1, hidden=16)
    problems = problems_of(student, teacher, tok, qwen)
    assert any("another tokenizer family" in p for p in problems)
    assert any("model vocab sizes differ" in p for p in problems)


def test_padded_vocabulary_warns():
    qwen = qwen3_tokenizer()
    model = tiny_qwen3(qwen, layers=1, hidden=16, heads=2, vocab_size=151936)
    with pytest.warns(PaddedVocabularyWarning, match="151936 logits"):
        report = preflight(model, model, qwen, qwen)
    assert report.tokenizer_size == 151669 and report.student_vocab_size == 151936
    assert len(report.warnings) == 1 and "logits[..., :len(tokenizer)]" in report.warnings[0]


def test_sanity_mode_zero_divergence(student, teacher, tok):
    report = preflight(student, teacher, tok, tok, sanity=True)
    assert report.sanity_max_kl == 0.0
    assert any(check.startswith("sanity") for check in report.checks)


def test_sanity_catches_dropout_left_on(tok):
    model = tiny_qwen3(tok, layers=1, hidden=16, attention_dropout=0.5).train()
    with pytest.raises(PreflightError, match="dropout"):
        sanity_check(model, tok)
    assert sanity_check(model.eval(), tok) == 0.0


def test_per_token_forward_kl():
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    kl = per_token_forward_kl(teacher, student)
    p = teacher.softmax(-1)
    expected = (p * (p.log() - student.log_softmax(-1))).sum(-1)
    assert kl.shape == (2, 5)
    torch.testing.assert_close(kl, expected)
    assert (kl > 0).all()
    assert per_token_forward_kl(teacher, teacher).abs().max() < 1e-6


# ----------------------------------------------------------------- the run-level checks (hub)


@pytest.fixture(scope="module")
def qwen_pair():
    """Two tiny models over the real Qwen3 tokenizer (151,669 ids; hidden 16: cheap)."""
    from opd_lib.lab.tokenizers import qwen3_tokenizer

    qwen = qwen3_tokenizer()
    small = dict(layers=1, hidden=16, heads=2)
    return tiny_qwen3(qwen, seed=0, **small), tiny_qwen3(qwen, seed=1, **small), qwen


def test_check_run_passes_a_matching_hub_pair(qwen_pair):
    from opd_lib.lab.config import Config
    from opd_lib.lab.preflight import check_run

    student, teacher, qwen = qwen_pair
    config = Config(model="hub", task="gsm8k", max_prompt_tokens=64, memory_budget_gib=8.0)
    passed = check_run(config, student, teacher, qwen, qwen, ["What is 2 + 3?"], 32)
    assert any("thinking off" in p for p in passed)
    assert any("the longest" in p for p in passed) and any("within 8 GiB" in p for p in passed)


def test_check_run_refuses_long_prompts_thinking_on_and_what_does_not_fit(qwen_pair):
    from opd_lib.lab.config import Config
    from opd_lib.lab.preflight import PreflightError, check_run

    student, teacher, qwen = qwen_pair
    hub = dict(model="hub", task="gsm8k")
    long = ["word " * 80, "short"]
    with pytest.raises(
        PreflightError, match=r"1 of 2 prompts are longer than max_prompt_tokens=64"
    ):
        check_run(Config(**hub, max_prompt_tokens=64), student, teacher, qwen, qwen, long)
    # a teacher template that ignores enable_thinking: same probe chat, another GSM8K prompt
    thinking = copy.deepcopy(qwen)
    thinking.chat_template = qwen.chat_template.replace("enable_thinking", "thinking_switch")
    with pytest.raises(PreflightError, match="render the same prompt differently"):
        check_run(Config(**hub), student, teacher, qwen, thinking)
    # a 6 GiB card and completions of 400k tokens: refused, naming the largest component (the
    # evaluation KL block) and the hub preset that fits 6 GiB
    config = Config(**hub, memory_budget_gib=6.0)
    with pytest.raises(
        MemoryError, match=r"largest component: eval_scoring.*fit 6 GiB: \['colab-t4'\]"
    ):
        check_run(config, student, teacher, qwen, qwen, ["hi"], 400_000)
