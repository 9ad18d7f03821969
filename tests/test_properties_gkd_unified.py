"""Hypothesis properties of opd_lib.gkd and opd_lib.unified, and bad inputs (models included)
refused by name."""

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_lib import divergences, gkd, unified
from opd_lib.models import tiny_qwen3
from opd_lib.tokenizers import char_tokenizer

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def tiny():
    tok = char_tokenizer()
    student = tiny_qwen3(tok, layers=1, hidden=16, heads=2, seed=1)
    teacher = tiny_qwen3(tok, layers=1, hidden=16, heads=2, seed=2)
    batch = gkd.GKDBatch.from_texts(tok, ["ab:", "c:"], ["ab", "cab"])
    broken = copy.deepcopy(student)
    with torch.no_grad():
        next(broken.parameters()).fill_(math.nan)
    return tok, student, teacher, batch, broken


@st.composite
def logit_pair(draw):
    b, t, v = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    s = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 3
    te = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(b, t, generator=g) < 0.7
    mask.view(-1)[0] = True
    return s, te, mask


@SETTINGS
@given(logit_pair(), st.floats(0.0, 1.0), st.floats(0.5, 3.0))
def test_gkd_loss_is_the_masked_mean_jsd_nonnegative_and_order_free(pair, beta, temperature):
    s, t, mask = pair
    loss = gkd.gkd_loss(s, t, mask, beta, temperature)
    assert loss >= -1e-12 and gkd.gkd_loss(s, s, mask, beta, temperature).abs() < 1e-9
    per_token = divergences.token_divergence(s, t, "jsd", beta, temperature)
    torch.testing.assert_close(loss, per_token[mask].mean())
    torch.testing.assert_close(gkd.gkd_loss(s, t, mask.long(), beta, temperature), loss)
    perm = torch.arange(s.shape[0]).flip(0)
    torch.testing.assert_close(gkd.gkd_loss(s[perm], t[perm], mask[perm], beta, temperature), loss)


@SETTINGS
@given(st.integers(1, 60), st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_lambda_schedule_rises_from_zero_to_one(total, warmup, mixed):
    lams = [gkd.lambda_schedule(step, total, warmup, mixed) for step in range(total + 1)]
    assert all(0.0 <= x <= 1.0 for x in lams)
    assert all(a <= b + 1e-12 for a, b in zip(lams, lams[1:], strict=False))
    assert lams[-1] == 1.0


@SETTINGS
@given(st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_choose_source_is_reproducible_and_follows_lam_at_the_ends(lam, seed):
    def pick(seq_kd):
        return gkd.choose_source(lam, seq_kd, torch.Generator().manual_seed(seed))

    assert pick(False) == pick(False) and pick(True) in ("student", "teacher")
    assert gkd.choose_source(0.0, True, None) == "teacher"
    assert gkd.choose_source(1.0, False, None) == "student"


@SETTINGS
@given(st.integers(0, 2**16), st.floats(0.0, 1.0), st.floats(-2.0, 2.0))
def test_advantages_blend_linearly_in_lam(seed, lam, reward):
    g = torch.Generator().manual_seed(seed)
    lp_s = -torch.rand(2, 3, generator=g, dtype=torch.float64) * 3
    lp_t = -torch.rand(2, 3, generator=g, dtype=torch.float64) * 3
    a = unified.advantages(lp_s, lp_t, reward, 0.5, lam)
    dense = unified.advantages(lp_s, lp_t, reward, 0.5, 1.0)
    outcome = unified.advantages(lp_s, None, reward, 0.5, 0.0)
    torch.testing.assert_close(dense, lp_t - lp_s)
    torch.testing.assert_close(outcome, torch.full_like(lp_s, reward - 0.5))
    torch.testing.assert_close(a, lam * dense + (1 - lam) * outcome)


def test_nan_models_are_refused_by_name_in_every_preset_and_gkd_step(tiny):
    _, student, teacher, batch, broken = tiny
    gen = torch.Generator().manual_seed(0)
    verifier = unified.constant_reward(1.0)
    with pytest.raises(ValueError, match="student"):
        unified.preset_loss("sft", broken, batch)
    with pytest.raises(ValueError, match="student"):
        unified.preset_loss("opd", broken, batch, teacher=teacher, generator=gen)
    with pytest.raises(ValueError, match="student"):
        unified.preset_loss("rl", broken, batch, verifier=verifier, generator=gen)
    with pytest.raises(ValueError, match="teacher"):
        unified.meta_loss(student, batch, alpha=0.0, lam=1.0, teacher=broken)
    with pytest.raises(ValueError, match="teacher"):
        gkd.gkd_step(student, broken, batch, lam=0.0, beta=0.5, max_new_tokens=2, generator=gen)
    with pytest.raises(ValueError, match="student"):
        gkd.gkd_step(broken, teacher, batch, lam=1.0, beta=0.5, max_new_tokens=2, generator=gen)


# ------------------------------------------------------------------------------ bad inputs

S, T = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
M = torch.tensor([[True, True, False], [True, False, True]])
LP = -torch.rand(2, 3) - 0.01


def bad_calls(tok, student, teacher, batch):
    gen = torch.Generator().manual_seed(0)
    step = dict(lam=0.0, beta=0.5, max_new_tokens=2, generator=gen)
    meta = dict(alpha=0.0, lam=0.0, reward_fn=unified.constant_reward(1.0))
    return [
        (lambda: gkd.gkd_loss(S, T, torch.where(M, 4, -100)), "mask"),
        (lambda: gkd.gkd_loss(S, T, M.float() * 0.5), "mask"),
        (lambda: gkd.gkd_loss(S.half().long(), T, M), "student_logits"),
        (lambda: gkd.gkd_loss(S, T, M, beta="0.5"), "beta"),
        (lambda: gkd.gkd_loss(S, T, M, temperature=math.inf), "temperature"),
        (lambda: gkd.choose_source("0.5", False, None), "lam"),
        (lambda: gkd.choose_source(0.5, "no", None), "seq_kd"),
        (lambda: gkd.choose_source(0.5, False, 3), "generator"),
        (lambda: gkd.lambda_schedule(1.5, 10), "step"),
        (lambda: gkd.lambda_schedule(1, True), "total_steps"),
        (lambda: gkd.lambda_schedule(1, 10, warmup=math.nan), "warmup"),
        (lambda: gkd.lambda_schedule(1, 10, mixed="0.4"), "mixed"),
        (lambda: gkd.gkd_step(None, teacher, batch, **step), "student"),
        (lambda: gkd.gkd_step(student, "teacher", batch, **step), "teacher"),
        (
            lambda: gkd.gkd_step(student, teacher, batch, **{**step, "max_new_tokens": 0}),
            "max_new_tokens",
        ),
        (lambda: gkd.gkd_step(student, teacher, batch, **step, temperature=0.0), "temperature"),
        (
            lambda: gkd.gkd_step(student, teacher, batch, **step, loss_temperature=math.nan),
            "loss_temperature",
        ),
        (
            lambda: gkd.on_policy_loss(
                student, teacher, batch, beta=0.5, max_new_tokens=2, seed=-1
            ),
            "seed",
        ),  # fmt: skip
        (lambda: gkd.train_gkd(student, teacher, batch, steps=1, lr=0.0), "lr"),
        (lambda: gkd.train_gkd(student, teacher, batch, steps=1, eval_every=1.5), "eval_every"),
        (lambda: gkd.train_gkd(student, teacher, batch, steps=True), "steps"),
        (lambda: unified.advantages(LP + 1, LP, 1.0, 0.0, 0.5), "logp_student"),
        (
            lambda: unified.advantages(LP, LP.clone().fill_(-math.inf), 1.0, 0.0, 0.5),
            "logp_teacher",
        ),
        (lambda: unified.advantages(LP, LP, math.inf, 0.0, 0.5), "reward"),
        (lambda: unified.advantages(LP, LP, 1.0, "mean", 0.5), "baseline"),
        (lambda: unified.advantages(LP, LP, 1.0, 0.0, "1"), "lam"),
        (lambda: unified.constant_reward(math.nan), "value"),
        (lambda: unified.hinted_teacher("model", tok, ["a"], ["b"]), "model"),
        (lambda: unified.hinted_teacher(student, None, ["a"], ["b"]), "tokenizer"),
        (lambda: unified.hinted_teacher(student, tok, "a", ["b"]), "prompts"),
        (lambda: unified.hinted_teacher(student, tok, ["a"], [1]), "hints"),
        (lambda: unified.meta_loss("student", batch, **meta), "student"),
        (lambda: unified.meta_loss(student, (1, 2), **meta), "batch"),
        (lambda: unified.meta_loss(student, batch, **{**meta, "alpha": math.nan}), "alpha"),
        (lambda: unified.meta_loss(student, batch, **{**meta, "lam": 2.0}), "lam"),
        (lambda: unified.meta_loss(student, batch, **meta, temperature=0.0), "temperature"),
        (lambda: unified.meta_loss(student, batch, **meta, max_new_tokens=0), "max_new_tokens"),
        (lambda: unified.meta_loss(student, batch, **meta, baseline=math.inf), "baseline"),
        (lambda: unified.meta_loss(student, batch, **{**meta, "reward_fn": "R"}), "reward_fn"),
        (lambda: unified.meta_loss(student, batch, alpha=0.0, lam=1.0, teacher="T"), "teacher"),
        (lambda: unified.preset_loss("dpo", student, batch), "name"),
        (lambda: unified.preset_loss("sft", None, batch), "student"),
    ]


def test_bad_input_is_refused_naming_the_argument(tiny):
    tok, student, teacher, batch, _ = tiny
    for i, (call, name) in enumerate(bad_calls(tok, student, teacher, batch)):
        with pytest.raises((ValueError, TypeError), match=name):
            call()
            pytest.fail(f"case {i} ({name}) returned a value")
