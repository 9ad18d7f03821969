"""Tests for opd_lib.sim.stability (Chapter 7's tiny distillation runs)."""

import math

import pytest
import torch

from opd_lib.gkd import GKDBatch
from opd_lib.sim import stability


@pytest.fixture(scope="module")
def pair():
    return stability.reversal_pair(seed=0, teacher_steps=3, student_steps=1, n_train=200)


@pytest.fixture(scope="module")
def stats(pair):
    prompts, _ = stability.reversal_task(12, seed=3)
    ids, attn = stability.encode_prompts(pair.tokenizer, prompts)
    return stability.rollout_token_stats(pair, ids, attn, seed=0)


def test_reversal_task_answers_are_reversed_and_deterministic():
    prompts, answers = stability.reversal_task(50, seed=1, min_len=2, max_len=4)
    assert (prompts, answers) == stability.reversal_task(50, seed=1, min_len=2, max_len=4)
    for p, a in zip(prompts, answers, strict=True):
        assert p.endswith("=") and a == p[:-1][::-1] and 2 <= len(a) <= 4
        assert set(a) <= set(stability.REVERSAL_LETTERS)


@pytest.mark.parametrize(
    "kwargs", [dict(n=0), dict(min_len=0), dict(min_len=5, max_len=3), dict(letters="ab=")]
)
def test_reversal_task_rejects_bad_input(kwargs):
    args = dict(n=5, seed=0) | kwargs
    with pytest.raises(ValueError):
        stability.reversal_task(**args)


def test_jaccard():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert stability.jaccard(a, b) == pytest.approx(1 / 3)
    assert stability.jaccard(a, a) == 1.0
    assert (
        stability.jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
    )
    with pytest.raises(ValueError):
        stability.jaccard(a, b[:3])
    with pytest.raises(ValueError):
        stability.jaccard(a.int(), b)


def test_entropy_of_uniform_and_one_hot():
    assert stability.entropy(torch.zeros(2, 7)).tolist() == pytest.approx([math.log(7)] * 2)
    assert stability.entropy(torch.tensor([[0.0, -1e4, -1e4]])).item() == pytest.approx(0, abs=1e-6)


def test_reversal_pair_is_deterministic_and_freezes_the_teacher(pair):
    again = stability.reversal_pair(seed=0, teacher_steps=3, student_steps=1, n_train=200)
    for a, b in zip(pair.student.parameters(), again.student.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in pair.teacher.parameters())
    assert any(p.requires_grad for p in pair.student.parameters())


def test_rollout_token_stats(stats):
    m = stats.mask
    assert m.shape == stats.completion_ids.shape and m.any()
    for t in (stats.student_entropy, stats.teacher_entropy, stats.divergence):
        assert t.shape == m.shape
        assert (t[~m] == 0).all()
        assert (t[m] >= -1e-5).all()
    assert (stats.student_entropy[m] <= math.log(stats.vocab_size) + 1e-4).all()


def test_select_by_rule(stats):
    args = (stats.student_entropy, stats.teacher_entropy, stats.divergence, stats.mask)
    n = int(stats.mask.sum())
    assert torch.equal(stability.select_by_rule("all", *args, stats.vocab_size), stats.mask)
    for rule in ("tip", "confidence"):
        keep = stability.select_by_rule(rule, *args, stats.vocab_size, 0.5)
        assert int(keep.sum()) == math.ceil(0.5 * n)
        assert not (keep & ~stats.mask).any()
    with pytest.raises(ValueError, match="unknown rule"):
        stability.select_by_rule("random", *args, stats.vocab_size, 0.5)


def test_completion_logprobs_match_a_manual_computation(pair):
    tok = pair.tokenizer
    batch = GKDBatch.from_texts(tok, ["ab=", "cde="], ["ba", "edc"])
    logp, mask = stability.completion_logprobs(
        pair.student, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, tok.eos_token_id
    )
    assert mask.sum(1).tolist() == [3, 4]  # answer + EOS
    assert (logp[mask] <= 0).all() and (logp[~mask] == 0).all()
    # row 1 has no padding: compare with a plain forward pass
    ids = torch.cat([batch.prompt_ids[1:], batch.completion_ids[1:]], 1)
    with torch.no_grad():
        logits = pair.student(input_ids=ids).logits[0]
    p_len = batch.prompt_ids.shape[1]
    manual = torch.log_softmax(logits, -1)[p_len - 1 : -1].gather(-1, ids[0, p_len:, None])[:, 0]
    assert torch.allclose(logp[1, :4], manual[:4], atol=1e-5)


def test_reversal_rollouts_shapes(pair):
    ids, attn, comp = stability.reversal_rollouts(
        pair.student, pair.tokenizer, ["ab=", "c="], 1.0, 5
    )
    assert comp.shape == (2, 5) and ids.shape == attn.shape


def test_heldout_reverse_kl_is_zero_against_itself_and_positive_otherwise(pair):
    prompts, _ = stability.reversal_task(8, seed=0)
    assert stability.heldout_reverse_kl(pair.teacher, pair.teacher, pair.tokenizer, prompts) == (
        pytest.approx(0.0, abs=1e-6)
    )
    assert stability.heldout_reverse_kl(pair.student, pair.teacher, pair.tokenizer, prompts) > 0


def test_opd_run_leaves_the_pair_alone_and_is_deterministic(pair):
    before = [p.clone() for p in pair.student.parameters()]
    kw = dict(steps=2, batch_size=4, n_eval=6, max_new_tokens=4, seed=3)
    run = stability.opd_run(pair, "tip", 0.5, **kw)
    for a, b in zip(before, pair.student.parameters(), strict=True):
        assert torch.equal(a, b)
    assert run.eval_steps == [0, 2] and len(run.eval_rkl) == 2
    assert 0.5 <= run.fraction_kept < 0.75 and run.wall_s > 0
    again = stability.opd_run(pair, "tip", 0.5, **kw)
    assert again.eval_rkl == run.eval_rkl and again.fraction_kept == run.fraction_kept
    full = stability.opd_run(pair, "all", 0.3, **kw)
    assert full.fraction_kept == 1.0 and full.keep_fraction == 1.0


def test_opd_run_training_on_all_tokens_lowers_the_divergence(pair):
    run = stability.opd_run(pair, "all", steps=12, batch_size=16, n_eval=16, lr=5e-3)
    assert run.eval_rkl[-1] < run.eval_rkl[0]


@pytest.mark.parametrize(
    "kwargs", [dict(rule="nope"), dict(keep_fraction=0.0), dict(steps=0), dict(eval_every=0)]
)
def test_opd_run_rejects_bad_input(pair, kwargs):
    args = dict(rule="tip", keep_fraction=0.5) | kwargs
    with pytest.raises(ValueError):
        stability.opd_run(pair, **args)


def test_compare_rules_order_and_shared_start(pair):
    kw = dict(steps=1, batch_size=4, n_eval=6, max_new_tokens=4)
    runs = stability.compare_rules(pair, [("all", 1.0), ("confidence", 0.5)], [0, 1], **kw)
    expected = [("all", 0), ("all", 1), ("confidence", 0), ("confidence", 1)]
    assert [(r.rule, r.seed) for r in runs] == expected
    assert len({r.eval_rkl[0] for r in runs}) == 1
    assert runs[3].eval_rkl == stability.opd_run(pair, "confidence", 0.5, seed=1, **kw).eval_rkl
    with pytest.raises(ValueError):
        stability.compare_rules(pair, [], [0])
