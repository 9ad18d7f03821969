"""opd_lib.gkd: the GKD loss against TRL, one GKD step, and the lambda schedule."""

import os

import pytest
import torch

from opd_lib.divergences import token_divergence
from opd_lib.gkd import (
    GKDBatch,
    choose_source,
    completion_logits,
    gkd_loss,
    gkd_step,
    lambda_schedule,
    on_policy_loss,
    train_gkd,
)
from opd_lib.lab.models import tiny_qwen3_pair
from opd_lib.lab.tokenizers import char_tokenizer
from opd_lib.sampling import completion_mask

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="module")
def trl_loss():
    gkd = pytest.importorskip("trl.experimental.gkd")
    return gkd.GKDTrainer.generalized_jsd_loss


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer()
    pair = tiny_qwen3_pair(
        tok, teacher=dict(layers=2, hidden=64, heads=4), student=dict(layers=1, hidden=32, heads=2)
    )
    batch = GKDBatch.from_texts(tok, ["abc", "hello there", "x"], ["123", "45", "6789"])
    return pair, tok, batch


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.2])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gkd_loss_equals_trl(trl_loss, beta, temperature):
    g = torch.Generator().manual_seed(int(beta * 10) + int(temperature))
    s = torch.randn(3, 7, 11, generator=g) * 2
    t = torch.randn(3, 7, 11, generator=g) * 2
    mask = torch.rand(3, 7, generator=g) < 0.6
    mask[0, 0] = True
    labels = torch.where(mask, torch.randint(0, 11, (3, 7), generator=g), -100)
    ours = gkd_loss(s, t, mask, beta=beta, temperature=temperature)
    theirs = trl_loss(s, t, labels=labels, beta=beta, temperature=temperature)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_gkd_loss_gradient_equals_trl(trl_loss):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 9, generator=g, requires_grad=True)
    t = torch.randn(2, 5, 9, generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    (ours,) = torch.autograd.grad(gkd_loss(s, t, mask, beta=0.5), s)
    labels = torch.where(mask, 1, -100)
    (theirs,) = torch.autograd.grad(trl_loss(s, t, labels=labels, beta=0.5), s)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_gkd_loss_accepts_an_integer_mask_and_requires_one():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    m = torch.tensor([[1, 0, 1], [1, 1, 0]])
    torch.testing.assert_close(gkd_loss(s, t, m), gkd_loss(s, t, m.bool()))
    with pytest.raises(ValueError, match="mask"):
        gkd_loss(s, t, None)
    with pytest.raises(ValueError, match="beta"):
        gkd_loss(s, t, m, beta=1.5)


def test_lam_zero_is_supervised_kd_on_the_data(setup):
    pair, tok, batch = setup
    result = gkd_step(
        pair.student,
        pair.teacher,
        batch,
        lam=0.0,
        beta=0.0,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.source == "data"
    assert torch.equal(result.completion_ids, batch.completion_ids)
    # By hand: full sequences, shift by one, teacher logits computed directly.
    width = batch.prompt_ids.shape[1]
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    attn = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        t_logits = pair.teacher(input_ids=ids, attention_mask=attn, position_ids=pos).logits
        s_logits = pair.student(input_ids=ids, attention_mask=attn, position_ids=pos).logits
    sl = slice(width - 1, ids.shape[1] - 1)
    mask = completion_mask(batch.completion_ids, tok.eos_token_id)
    expected = token_divergence(
        s_logits[:, sl], t_logits[:, sl], kind="fkl", mask=mask, reduction="mean"
    )
    torch.testing.assert_close(result.loss.detach(), expected, rtol=1e-5, atol=1e-7)
    assert result.n_tokens == int(mask.sum()) == 4 + 3 + 5
    # The teacher is not trained: the loss has a graph to the student only.
    result.loss.backward()
    assert all(p.grad is None for p in pair.teacher.parameters())
    assert any(p.grad is not None for p in pair.student.parameters())
    pair.student.zero_grad()


def test_lam_one_trains_on_student_samples_masked_after_eos(setup):
    pair, tok, batch = setup
    result = gkd_step(
        pair.student,
        pair.teacher,
        batch,
        lam=1.0,
        beta=0.5,
        max_new_tokens=40,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.source == "student"
    assert result.completion_ids.shape == (3, 40)
    assert torch.equal(result.mask, completion_mask(result.completion_ids, tok.eos_token_id))
    s_logits = completion_logits(
        pair.student, batch.prompt_ids, batch.prompt_mask, result.completion_ids
    )
    with torch.no_grad():
        t_logits = completion_logits(
            pair.teacher, batch.prompt_ids, batch.prompt_mask, result.completion_ids
        )
    expected = gkd_loss(s_logits, t_logits, result.mask, beta=0.5)
    torch.testing.assert_close(result.loss, expected)


def test_seq_kd_uses_the_teacher_samples(setup):
    pair, _, batch = setup
    result = gkd_step(
        pair.student,
        pair.teacher,
        batch,
        lam=0.0,
        beta=0.5,
        seq_kd=True,
        max_new_tokens=5,
        generator=torch.Generator().manual_seed(2),
    )
    assert result.source == "teacher"
    assert result.completion_ids.shape == (3, 5)


def test_gkd_step_is_deterministic_given_the_generator(setup):
    pair, _, batch = setup
    runs = [
        gkd_step(
            pair.student,
            pair.teacher,
            batch,
            lam=0.5,
            beta=0.5,
            max_new_tokens=8,
            generator=torch.Generator().manual_seed(5),
        )
        for _ in range(2)
    ]
    assert runs[0].source == runs[1].source
    assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)
    assert torch.equal(runs[0].loss, runs[1].loss)


def test_choose_source_follows_lam():
    g = torch.Generator().manual_seed(0)
    picks = [choose_source(0.3, False, g) for _ in range(4000)]
    assert set(picks) == {"student", "data"}
    assert abs(picks.count("student") / 4000 - 0.3) < 0.03
    assert choose_source(0.0, True, g) == "teacher"
    assert choose_source(1.0, True, g) == "student"
    with pytest.raises(ValueError, match="lam"):
        choose_source(1.2, False, g)


def test_gkd_step_rejects_bad_input(setup):
    pair, _, batch = setup
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="lam"):
        gkd_step(
            pair.student, pair.teacher, batch, lam=-0.1, beta=0.5, max_new_tokens=4, generator=g
        )
    with pytest.raises(ValueError, match="beta"):
        gkd_step(
            pair.student, pair.teacher, batch, lam=0.5, beta=2.0, max_new_tokens=4, generator=g
        )
    with pytest.raises(ValueError, match="GKDBatch"):
        gkd_step(
            pair.student,
            pair.teacher,
            {"prompt_ids": batch.prompt_ids},
            lam=0.5,
            beta=0.5,
            max_new_tokens=4,
            generator=g,
        )


def test_batch_validation():
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="left padded"):
        GKDBatch(ids, torch.tensor([[1, 1, 0], [1, 1, 1]]), ids)
    with pytest.raises(ValueError, match="prompt_mask"):
        GKDBatch(ids, torch.ones(2, 4), ids)
    with pytest.raises(ValueError, match="completions"):
        GKDBatch(ids, torch.ones_like(ids), torch.ones(3, 2, dtype=torch.long))
    tok = char_tokenizer()
    with pytest.raises(ValueError, match="as many"):
        GKDBatch.from_texts(tok, ["a", "b"], ["c"])


def test_from_texts_pads_prompts_left_and_completions_right():
    tok = char_tokenizer()
    b = GKDBatch.from_texts(tok, ["ab", "abcd"], ["x", "xyz"])
    assert b.prompt_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert b.completion_ids[0, 1:].tolist() == [eos, pad, pad]
    assert b.completion_ids[1, -1].item() == eos


def test_lambda_schedule_phases():
    total = 100
    lams = [lambda_schedule(s, total, warmup=0.2, mixed=0.4) for s in range(total + 1)]
    assert all(v == 0.0 for v in lams[:20])
    assert lams[20] == 0.0 and lams[40] == pytest.approx(0.5) and lams[59] == pytest.approx(0.975)
    assert all(b >= a for a, b in zip(lams[:-1], lams[1:], strict=True))
    assert all(v == 1.0 for v in lams[60:])
    assert lambda_schedule(10, 10) == 1.0
    # mixed = 0 is a jump from off-policy to on-policy
    assert lambda_schedule(49, 100, warmup=0.5, mixed=0.0) == 0.0
    assert lambda_schedule(50, 100, warmup=0.5, mixed=0.0) == 1.0


@pytest.mark.parametrize(
    "args",
    [(-1, 10), (11, 10), (0, 0), (0, 10, -0.1, 0.4), (0, 10, 0.7, 0.4), (0, 10, 0.2, -0.1)],
)
def test_lambda_schedule_rejects_bad_input(args):
    with pytest.raises(ValueError):
        lambda_schedule(*args)


def test_train_gkd_records_history_and_leaves_the_teacher_alone():
    tok = char_tokenizer()
    pair = tiny_qwen3_pair(
        tok,
        teacher=dict(layers=1, hidden=32, heads=2, initializer_range=1.0),
        student=dict(layers=1, hidden=32, heads=2),
    )
    batch = GKDBatch.from_texts(tok, ["ab", "cde"], ["xy", "z"])
    teacher_before = [p.clone() for p in pair.teacher.parameters()]
    history = train_gkd(
        pair.student,
        pair.teacher,
        batch,
        steps=10,
        lam=None,
        lr=1e-2,
        max_new_tokens=4,
        eval_every=5,
    )
    assert len(history.loss) == len(history.source) == len(history.lam) == 10
    assert history.lam[:2] == [0.0, 0.0] and history.lam[-1] == 1.0  # the default schedule
    assert history.source[:2] == ["data", "data"] and history.source[-1] == "student"
    assert history.eval_steps == [0, 5, 10]
    assert all(
        torch.equal(a, b) for a, b in zip(teacher_before, pair.teacher.parameters(), strict=True)
    )
    off = train_gkd(pair.student, pair.teacher, batch, steps=3, lam=0.0, max_new_tokens=4)
    assert set(off.source) == {"data"}
    with pytest.raises(ValueError, match="steps"):
        train_gkd(pair.student, pair.teacher, batch, steps=0)


def test_on_policy_loss_is_reproducible(setup):
    pair, _, batch = setup
    a = on_policy_loss(pair.student, pair.teacher, batch, beta=0.5, max_new_tokens=5, seed=3)
    b = on_policy_loss(pair.student, pair.teacher, batch, beta=0.5, max_new_tokens=5, seed=3)
    assert a == b > 0
