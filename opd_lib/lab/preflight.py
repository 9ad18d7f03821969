"""Preflight checks for a teacher/student pair: catch mismatches that silently break distillation.

Per-token distillation compares the teacher's and the student's next-token distributions at the
same positions, so both must read the same token ids, stop on the same token, pad with the same
token, render conversations the same way and produce logits over the same id range. None of these
mismatches raises an error by itself: the loss is simply computed on the wrong things.

:func:`check_run` adds what a lab run needs before its first step: thinking mode off and one
rendered GSM8K prompt for both models, no prompt over ``max_prompt_tokens``, and an estimated
peak memory within ``memory_budget_gib`` (``opd_lib.lab.memory``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from opd_lib.divergences import token_divergence
from opd_lib.lab.memory import ModelShape, estimate_for_settings, refuse_if_too_big
from opd_lib.lab.presets import HUB_PRESETS
from opd_lib.lab.tasks import check_same_template, render_prompt

__all__ = [
    "DEFAULT_PROBE_CONVERSATION",
    "DEFAULT_PROBE_TEXTS",
    "PaddedVocabularyWarning",
    "PreflightError",
    "PreflightReport",
    "check_run",
    "per_token_forward_kl",
    "preflight",
    "sanity_check",
]

DEFAULT_PROBE_TEXTS: tuple[str, ...] = (
    "Hello world",
    " the quick brown fox jumps over the lazy dog.",
    "12 + 30 = 42\n",
    "def f(x):\n    return x  # tabs\tand  spaces\n\n",
    "naïve café, 東京, Привет, 🙂",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<think>\nok\n</think>\n\nanswer",
)
DEFAULT_PROBE_CONVERSATION: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "you are terse."},
    {"role": "user", "content": "what is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "and 3+3?"},
)
SANITY_TOLERANCE = 1e-6


class PreflightError(ValueError):
    """A teacher/student mismatch that would silently break distillation; ``problems`` lists all."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"preflight found {len(self.problems)} problem(s) that would silently break "
            f"distillation:\n{lines}"
        )


class PaddedVocabularyWarning(UserWarning):
    """The model has more logits than the tokenizer has tokens; the extra ones must be masked."""


@dataclass(frozen=True)
class PreflightReport:
    """What :func:`preflight` checked (everything listed passed)."""

    checks: tuple[str, ...]
    tokenizer_size: int
    student_vocab_size: int
    teacher_vocab_size: int
    eos_token_id: int | None
    pad_token_id: int | None
    warnings: tuple[str, ...] = ()
    sanity_max_kl: float | None = None

    def __str__(self) -> str:
        lines = ["preflight passed:", *(f"  ok   {c}" for c in self.checks)]
        lines += [f"  warn {w}" for w in self.warnings]
        return "\n".join(lines)


def _short(ids: Sequence[int], limit: int = 12) -> str:
    ids = list(ids)
    return str(ids) if len(ids) <= limit else f"{ids[:limit]}... ({len(ids)} ids)"


def _model_vocab_size(model: PreTrainedModel) -> int:
    config = model.config
    size = getattr(config, "vocab_size", None)
    if size is None and hasattr(config, "get_text_config"):
        size = getattr(config.get_text_config(), "vocab_size", None)
    if size is None:
        size = model.get_output_embeddings().weight.shape[0]
    return int(size)


def _render(tokenizer: PreTrainedTokenizerBase, conversation: list[dict[str, str]], prompt: bool):
    """The rendered chat (or the error it raised), or None when there is no chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    try:
        return tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=prompt
        )
    except Exception as error:  # e.g. a template that rejects the system role
        return f"<template error: {error}>"


def _diff_snippet(a: str, b: str, context: int = 30) -> str:
    pos = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    lo = max(0, pos - context)
    return (
        f"first difference at character {pos}: student ...{a[lo : pos + context]!r}... vs "
        f"teacher ...{b[lo : pos + context]!r}..."
    )


def _check_vocabularies(student_tok, teacher_tok) -> str | None:
    if student_tok is teacher_tok:
        return None
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s_vocab == t_vocab:
        return None
    differing = sorted(
        (tok for tok in s_vocab.keys() | t_vocab.keys() if s_vocab.get(tok) != t_vocab.get(tok)),
        key=lambda tok: min(s_vocab.get(tok, 1 << 62), t_vocab.get(tok, 1 << 62)),
    )
    examples = ", ".join(
        f"{tok!r}: {s_vocab.get(tok)} vs {t_vocab.get(tok)}" for tok in differing[:3]
    )
    return (
        f"tokenizer vocabularies differ ({len(s_vocab)} vs {len(t_vocab)} entries, "
        f"{len(differing)} tokens with different ids; e.g. {examples}): the same id would mean "
        "different tokens to the student and the teacher"
    )


def _check_probes(student_tok, teacher_tok, texts: Sequence[str]) -> str | None:
    for text in texts:
        s_ids = student_tok.encode(text, add_special_tokens=False)
        t_ids = teacher_tok.encode(text, add_special_tokens=False)
        if s_ids != t_ids:
            pos = next(
                (i for i, (a, b) in enumerate(zip(s_ids, t_ids, strict=False)) if a != b),
                min(len(s_ids), len(t_ids)),
            )
            return (
                f"tokenizers encode the probe text {text!r} differently (first difference at "
                f"position {pos}): student {_short(s_ids)} vs teacher {_short(t_ids)}; the "
                "teacher probably comes from another tokenizer family, and per-token "
                "distillation needs one shared tokenizer"
            )
    return None


def _check_chat_templates(student_tok, teacher_tok, conversation) -> str | None:
    for prompt, conv in ((True, conversation), (False, conversation[:-1])):
        s_text, t_text = _render(student_tok, conv, prompt), _render(teacher_tok, conv, prompt)
        if (s_text is None) != (t_text is None):
            side = "student" if s_text is None else "teacher"
            return f"the {side} tokenizer has no chat template but the other does"
        if s_text != t_text:
            return (
                "chat templates render the probe conversation differently "
                f"(add_generation_prompt={prompt}; {_diff_snippet(s_text, t_text)}): prompts "
                "would be formatted differently for the two models"
            )
    return None


def _check_special_id(student_tok, teacher_tok, role: str) -> str | None:
    s_id, t_id = getattr(student_tok, f"{role}_token_id"), getattr(teacher_tok, f"{role}_token_id")
    if s_id == t_id:
        return None
    s_str, t_str = getattr(student_tok, f"{role}_token"), getattr(teacher_tok, f"{role}_token")
    consequence = {
        "eos": "rollouts would stop on a token the teacher does not treat as the end",
        "pad": "padding would be masked for one model and scored as text by the other",
    }[role]
    return (
        f"{role.upper()} ids differ: student {s_str!r} = {s_id} vs teacher {t_str!r} = {t_id}; "
        f"{consequence}"
    )


def _check_model_vocabs(s_vocab: int, t_vocab: int) -> str | None:
    if s_vocab == t_vocab:
        return None
    return (
        f"model vocab sizes differ: student config.vocab_size = {s_vocab} vs teacher {t_vocab}; "
        "the logits have different widths, so they must be cut to the shared tokenizer range "
        "before any KL (e.g. Qwen2.5-72B pads to 152064 while the small Qwen models pad to 151936)"
    )


def _check_fits(name: str, tokenizer, model_vocab: int) -> str | None:
    if len(tokenizer) <= model_vocab:
        return None
    return (
        f"the {name} tokenizer has {len(tokenizer)} tokens but the {name} model's "
        f"config.vocab_size is {model_vocab}: ids {model_vocab}..{len(tokenizer) - 1} are out of "
        "range for its embedding (wrong model for this tokenizer?)"
    )


def preflight(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    student_tokenizer: PreTrainedTokenizerBase,
    teacher_tokenizer: PreTrainedTokenizerBase,
    *,
    probe_texts: Sequence[str] | None = None,
    sanity: bool = False,
) -> PreflightReport:
    """Check that ``teacher`` can score ``student``'s tokens; raise :class:`PreflightError` if not.

    Checks: identical tokenizer vocabularies and encodings of ``probe_texts``, identical rendered
    chat templates, equal EOS and pad ids, equal model ``config.vocab_size``, and every tokenizer
    id inside the model's vocabulary. All problems are reported together. A model vocabulary
    padded beyond the tokenizer (Qwen pads 151669 tokens to 151936 logits) passes with a
    :class:`PaddedVocabularyWarning`. With ``sanity=True`` each model is also scored against
    itself with :func:`sanity_check`.
    """
    texts = DEFAULT_PROBE_TEXTS if probe_texts is None else tuple(probe_texts)
    s_tok, t_tok = student_tokenizer, teacher_tokenizer
    s_vocab, t_vocab = _model_vocab_size(student), _model_vocab_size(teacher)
    has_template = bool(
        getattr(s_tok, "chat_template", None) or getattr(t_tok, "chat_template", None)
    )
    results = [  # (problem or None, what passed)
        (_check_vocabularies(s_tok, t_tok), f"tokenizer vocabularies identical ({len(s_tok)})"),
        (_check_probes(s_tok, t_tok, texts), f"{len(texts)} probe texts encode identically"),
        (
            _check_chat_templates(s_tok, t_tok, list(DEFAULT_PROBE_CONVERSATION)),
            "chat templates render the probe conversation identically"
            if has_template
            else "chat templates: neither tokenizer has one (skipped)",
        ),
        (_check_special_id(s_tok, t_tok, "eos"), f"EOS id {s_tok.eos_token_id} shared"),
        (_check_special_id(s_tok, t_tok, "pad"), f"PAD id {s_tok.pad_token_id} shared"),
        (_check_model_vocabs(s_vocab, t_vocab), f"model vocab sizes equal ({s_vocab})"),
        (
            _check_fits("student", s_tok, s_vocab),
            f"student tokenizer ids fit its model ({len(s_tok)} <= {s_vocab})",
        ),
        (
            _check_fits("teacher", t_tok, t_vocab),
            f"teacher tokenizer ids fit its model ({len(t_tok)} <= {t_vocab})",
        ),
    ]
    problems = [problem for problem, _ in results if problem is not None]
    checks = [passed for problem, passed in results if problem is None]
    if problems:
        raise PreflightError(problems)

    notes = []
    padded = max(s_vocab, t_vocab)
    if padded > len(s_tok):
        notes.append(
            f"model vocabulary ({padded} logits) exceeds the tokenizer ({len(s_tok)} tokens): "
            f"logits {len(s_tok)}..{padded - 1} belong to no token; mask or drop them "
            "(e.g. logits[..., :len(tokenizer)]) before softmax and KL"
        )
        warnings.warn(notes[-1], PaddedVocabularyWarning, stacklevel=2)

    sanity_kl = None
    if sanity:
        sanity_kl = max(sanity_check(student, s_tok), sanity_check(teacher, t_tok))
        checks.append(f"sanity: each model against itself, max per-token KL {sanity_kl:.1e}")
    return PreflightReport(
        checks=tuple(checks),
        tokenizer_size=len(s_tok),
        student_vocab_size=s_vocab,
        teacher_vocab_size=t_vocab,
        eos_token_id=s_tok.eos_token_id,
        pad_token_id=s_tok.pad_token_id,
        warnings=tuple(notes),
        sanity_max_kl=sanity_kl,
    )


def check_run(
    config,
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    teacher_tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str] = (),
    max_new_tokens: int | None = None,
) -> tuple[str, ...]:
    """:func:`preflight` (without the padded-vocabulary warning: the lab's trainer masks those
    logits, ``opd_lib.models.restrict_logits``), then the run-level checks of a lab ``config`` (a
    ``Config``); returns what passed.

    * GSM8K: :func:`opd_lib.lab.tasks.check_same_template` (both tokenizers render the same
      prompt, with thinking off);
    * ``max_prompt_tokens > 0``: every rendered user message of ``prompts`` fits it;
    * ``memory_budget_gib > 0``: :func:`opd_lib.lab.memory.estimate_for_settings` at the two
      models' shapes, with the longest prompt and ``max_new_tokens`` (the resolved completion
      budget), must fit the budget (else ``MemoryError`` naming the largest component and the
      hub presets that fit).

    Raises :class:`PreflightError` for the first two."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PaddedVocabularyWarning)
        passed = list(preflight(student, teacher, tokenizer, teacher_tokenizer).checks)
    if config.task == "gsm8k":
        try:
            check_same_template(tokenizer, teacher_tokenizer)
        except ValueError as e:
            raise PreflightError([str(e)]) from e
        passed.append("thinking off; student and teacher render the same GSM8K prompt")
    longest = 0
    if prompts and (config.max_prompt_tokens or config.memory_budget_gib > 0):
        texts = [render_prompt(tokenizer, p) for p in prompts]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        longest = max(lengths)
        limit = config.max_prompt_tokens
        if limit and longest > limit:
            over = sum(n > limit for n in lengths)
            raise PreflightError([
                f"{over} of {len(lengths)} prompts are longer than max_prompt_tokens={limit} "
                f"(the longest has {longest} tokens): raise max_prompt_tokens (the memory "
                "estimate grows with it) or leave those prompts out"
            ])  # fmt: skip
        passed.append(f"{len(lengths)} prompts, the longest {longest} tokens")
    if config.memory_budget_gib > 0:
        settings = config.to_dict() | {
            "max_prompt_tokens": config.max_prompt_tokens or longest or 256,
            "max_new_tokens": max_new_tokens or config.max_new_tokens or 512,
        }
        shapes = [ModelShape.from_config(m.config) for m in (student, teacher)]
        estimate = estimate_for_settings(settings, *shapes)
        refuse_if_too_big(estimate, config.memory_budget_gib, HUB_PRESETS)
        passed.append(
            f"estimated peak {estimate.gib()['total']} GiB within {config.memory_budget_gib:g} GiB"
        )
    return tuple(passed)


def per_token_forward_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) at every position: ``sum_v p_t (log p_t - log p_s)``
    (``opd_lib.divergences.token_divergence(student, teacher, "fkl")``)."""
    return token_divergence(student_logits, teacher_logits, "fkl")


def sanity_check(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str | None = None,
    tolerance: float = SANITY_TOLERANCE,
) -> float:
    """Score a probe with ``model`` twice, as student and as teacher; the divergence must be zero.

    Returns the max absolute per-token forward KL and raises :class:`PreflightError` if it is
    ``>= tolerance`` or not finite: dropout left on (``model.eval()``), nondeterministic kernels,
    or a broken forward pass would otherwise show up later as a mysterious nonzero loss.
    """
    if text is None:
        conversation = list(DEFAULT_PROBE_CONVERSATION)
        text = _render(tokenizer, conversation, True) or "\n".join(DEFAULT_PROBE_TEXTS)
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    input_ids = input_ids.to(model.device)
    with torch.no_grad():
        as_student = model(input_ids=input_ids).logits
        as_teacher = model(input_ids=input_ids).logits
    kl = per_token_forward_kl(as_teacher, as_student)
    worst = kl.abs().max().item()
    if not torch.isfinite(kl).all() or worst >= tolerance:
        mode = "training" if model.training else "eval"
        raise PreflightError(
            [
                f"sanity check failed: the same model scored as student and teacher gives max "
                f"per-token KL {worst:.3g} (must be < {tolerance:g}); the model is in {mode} "
                "mode: dropout left on (call model.eval()), nondeterministic kernels or a "
                "broken forward pass"
            ]
        )
    return worst
