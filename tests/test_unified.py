"""The meta-algorithm's presets reduce to the specialised losses."""

import pytest
import torch
import torch.nn.functional as F

from opd_lib import unified
from opd_lib.gkd import GKDBatch, completion_logits
from opd_lib.lab import char_tokenizer, tiny_qwen3
from opd_lib.pg import per_token_reverse_kl_reward, reinforce_loss
from opd_lib.sampling import completion_mask, sample_completions


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer()
    student = tiny_qwen3(tok, layers=1, hidden=32, heads=2, seed=1)
    teacher = tiny_qwen3(tok, layers=1, hidden=32, heads=2, seed=2)
    batch = GKDBatch.from_texts(tok, ["ab:", "abc:", "c:"], ["ab", "cab", "ccc c"])
    return tok, student, teacher, batch


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()])


def test_advantages_formula():
    lp_s = torch.log(torch.tensor([[0.01, 0.3]]))
    lp_t = torch.log(torch.tensor([[0.6, 0.3]]))
    a = unified.advantages(lp_s, lp_t, torch.tensor([1.0]), torch.tensor([0.25]), 0.5)
    expected = 0.5 * (lp_t - lp_s) + 0.5 * 0.75
    assert torch.allclose(a, expected)
    assert not a.requires_grad
    assert torch.allclose(unified.advantages(lp_s, None, 1.0, 0.0, 0.0), torch.ones(1, 2))


@pytest.mark.parametrize(
    "kwargs",
    [dict(lam=1.5), dict(lam=0.5, logp_teacher=None), dict(reward=torch.ones(3))],
)
def test_advantages_rejects_bad_input(kwargs):
    base = dict(
        logp_student=torch.zeros(2, 3),
        logp_teacher=torch.zeros(2, 3),
        reward=torch.ones(2),
        baseline=0.0,
        lam=0.5,
    )
    base.update(kwargs)
    with pytest.raises(ValueError):
        unified.advantages(**base)


def test_sft_preset_is_cross_entropy(setup):
    tok, student, _, batch = setup
    res = unified.preset_loss("sft", student, batch, eos_token_id=tok.eos_token_id)
    g_meta = grads(student, res.loss)
    logits = completion_logits(student, batch.prompt_ids, batch.prompt_mask, batch.completion_ids)
    mask = completion_mask(batch.completion_ids, tok.eos_token_id)
    ce = F.cross_entropy(logits[mask], batch.completion_ids[mask])
    g_ce = grads(student, ce)
    assert torch.allclose(res.loss, ce, atol=1e-6)
    assert torch.allclose(g_meta, g_ce, atol=1e-6)
    assert not res.from_student.any()


def test_opd_preset_is_reinforce_with_the_reverse_kl_reward(setup):
    tok, student, teacher, batch = setup
    gen = torch.Generator().manual_seed(0)
    samples = sample_completions(
        student,
        batch.prompt_ids,
        batch.prompt_mask,
        6,
        generator=gen,
        eos_token_id=tok.eos_token_id,
    )
    res = unified.preset_loss(
        "opd", student, batch, teacher=teacher, samples=samples, eos_token_id=tok.eos_token_id
    )
    g_meta = grads(student, res.loss)
    mask = completion_mask(samples, tok.eos_token_id)
    logits = completion_logits(student, batch.prompt_ids, batch.prompt_mask, samples)
    lp_s = torch.log_softmax(logits, -1).gather(-1, samples[..., None])[..., 0]
    with torch.no_grad():
        t_logits = completion_logits(teacher, batch.prompt_ids, batch.prompt_mask, samples)
    lp_t = torch.log_softmax(t_logits, -1).gather(-1, samples[..., None])[..., 0]
    ref = reinforce_loss(lp_s, per_token_reverse_kl_reward(lp_t, lp_s), mask)
    g_ref = grads(student, ref)
    assert res.from_student.all()
    assert torch.equal(res.completion_ids, samples)
    assert torch.allclose(g_meta, g_ref, atol=1e-6)


def test_rl_and_rft_presets(setup):
    tok, student, _, batch = setup
    gen = torch.Generator().manual_seed(1)
    samples = sample_completions(
        student,
        batch.prompt_ids,
        batch.prompt_mask,
        5,
        generator=gen,
        eos_token_id=tok.eos_token_id,
    )
    rewards = torch.tensor([1.0, 0.0, 1.0])
    verifier = lambda ids, b: rewards  # noqa: E731
    rl = unified.preset_loss(
        "rl", student, batch, verifier=verifier, samples=samples, eos_token_id=tok.eos_token_id
    )
    assert torch.allclose(rl.advantage[:, 0], rewards - rewards.mean())
    rft = unified.preset_loss(
        "rft", student, batch, verifier=verifier, samples=samples, eos_token_id=tok.eos_token_id
    )
    assert torch.allclose(rft.advantage[:, 0], rewards)


def test_alpha_mixes_sequences(setup):
    tok, student, _, batch = setup
    samples = torch.full((3, 4), 5)
    res = unified.meta_loss(
        student,
        batch,
        alpha=0.5,
        lam=0.0,
        reward_fn=unified.constant_reward(),
        samples=samples,
        generator=torch.Generator().manual_seed(3),
        eos_token_id=tok.eos_token_id,
    )
    for b in range(3):
        source = samples[b] if res.from_student[b] else batch.completion_ids[b]
        assert torch.equal(res.completion_ids[b, : source.shape[0]], source)


def test_presets_table_and_bad_input(setup):
    tok, student, _, batch = setup
    assert set(unified.METHOD_DIALS) == {"sft", "rl", "opd", "opsd", "rft"}
    p = unified.METHOD_DIALS
    assert (p["sft"].alpha, p["rl"].lam, p["opd"].lam, p["opsd"].alpha) == (0.0, 0.0, 1.0, 1.0)
    assert len(unified.preset_table()) == 5
    with pytest.raises(ValueError):
        unified.preset_loss("dpo", student, batch)
    with pytest.raises(ValueError):
        unified.preset_loss("opd", student, batch)
    with pytest.raises(ValueError):
        unified.meta_loss(student, batch, alpha=2.0, lam=0.0, reward_fn=unified.constant_reward())
