"""The lab's fused divergence switch: the same losses, gradients and evaluation as the logits path,
without ever building the ``[B, C, V]`` logits; ``auto`` fuses only large vocabularies."""

import copy
import random

import pytest
import torch

from opd_lib.lab.cli import _config_from_args, build_parser
from opd_lib.lab.config import (
    FUSED_AUTO_VOCAB,
    STAGES,
    check_resumable,
    fused_on,
    stage_fields,
)
from opd_lib.lab.evaluate import evaluate
from opd_lib.lab.losses import fusable
from opd_lib.lab.models import tiny_qwen3
from opd_lib.lab.pair import cache_key
from opd_lib.lab.tasks import ALPHABET
from opd_lib.lab.tokenizers import char_tokenizer
from opd_lib.lab.trainer import Config, Trainer
from opd_lib.lm import completion_hidden, completion_logits, head_params

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(char_pair):
    return char_pair


def make(pair, **kw):
    base = dict(
        min_len=2, max_len=3, eval_lengths=(2, 3), eval_size=4, batch_size=4,
        micro_batch_size=4, progress=False, lr=1e-2, steps=2,
    )  # fmt: skip
    base.update(kw)
    fresh = type(pair)(copy.deepcopy(pair.teacher), copy.deepcopy(pair.student), pair.tokenizer)
    return Trainer(Config(**base), fresh)


def loss_and_grads(tr, roll):
    """The micro-batch loss (normalised as ``train_step`` does), its statistics and the gradient
    of every student parameter."""
    tr.student.zero_grad(set_to_none=True)
    total, stats = tr.loss_sum(roll)
    (total / int(roll.mask.sum())).backward()
    grads = {n: p.grad.clone() for n, p in tr.student.named_parameters() if p.grad is not None}
    return total.item() / int(roll.mask.sum()), stats, grads


def refuse_logits(model):
    """Make ``model``'s head module raise if called: a fused path only reads its weight."""

    def boom(*args, **kwargs):
        raise AssertionError("the [B, C, V] logits were built")

    model.lm_head.forward = boom


CASES = [
    dict(method="kd"),
    dict(method="gkd", lam=0.5, beta=0.5),
    dict(method="opd"),
    dict(method="opsd", opsd_teacher="live"),
    dict(method="opsd", opsd_teacher="frozen", opsd_kind="jsd"),
    dict(method="opsd", opsd_teacher="ema", clip="token", clip_value=0.01),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_fused_loss_and_every_gradient_equal_the_logits_path(pair, kw):
    plain, fused = make(pair, fused_divergence="off", **kw), make(pair, fused_divergence="on", **kw)
    assert not plain.fused and fused.fused and fusable(fused.config)
    for tr in (plain, fused):
        if tr.self_teacher is not None:  # a self-teacher that differs from the student
            tr.self_teacher.load_state_dict(tr.teacher.state_dict())
        elif kw["method"] == "opsd":  # a live one: sharper logits make the hint matter more
            with torch.no_grad():
                tr.student.lm_head.weight.mul_(8.0)
    roll = plain.rollout([plain.task.sample(random.Random(i)) for i in range(4)])
    loss_p, stats_p, grads_p = loss_and_grads(plain, roll)
    refuse_logits(fused.student)
    refuse_logits(fused.teacher)
    if fused.self_teacher is not None:
        refuse_logits(fused.self_teacher)
    loss_f, stats_f, grads_f = loss_and_grads(fused, roll)
    assert loss_p > 1e-4  # a real target, so agreement means something
    assert loss_f == pytest.approx(loss_p, abs=1e-5)
    for key in ("entropy_sum", "divergence_sum", "teacher_flops", "train_flops"):
        assert stats_f[key] == pytest.approx(stats_p[key], rel=1e-5, abs=1e-5), key
    assert grads_f.keys() == grads_p.keys() and grads_p
    scale = max(g.abs().max().item() for g in grads_p.values())  # float32 rounding scales too
    assert scale > 0
    for name, g in grads_p.items():
        torch.testing.assert_close(
            grads_f[name], g, atol=1e-5 * min(1.0, scale), rtol=1e-5, msg=name
        )


def test_token_clip_is_active_in_the_compared_case(pair):
    """The per-token clip case above compares something: some tokens are capped (zero gradient),
    others are not (the clipped sum lies strictly between the cap's and the divergence's)."""
    tr = make(pair, method="opsd", opsd_teacher="ema", clip="token", clip_value=0.01)
    tr.self_teacher.load_state_dict(tr.teacher.state_dict())
    roll = tr.rollout([tr.task.sample(random.Random(i)) for i in range(4)])
    with torch.no_grad():
        total, stats = tr.loss_sum(roll)
    assert total.item() < stats["divergence_sum"] - 1e-4
    assert total.item() < 0.01 * int(roll.mask.sum()) - 1e-4


def test_pointwise_clip_and_sampled_opd_stay_on_the_logits_path(pair):
    for kw in (dict(method="opsd", clip="pointwise"), dict(method="opd", opd_estimator="sampled")):
        plain, fused = (
            make(pair, fused_divergence="off", **kw),
            make(pair, **kw, fused_divergence="on"),
        )
        assert fused.fused and not fusable(fused.config)
        roll = plain.rollout([plain.task.sample(random.Random(i)) for i in range(4)])
        assert loss_and_grads(fused, roll)[0] == loss_and_grads(plain, roll)[0]  # bit-identical


def test_auto_fuses_from_the_threshold_only():
    assert not fused_on("auto", len(char_tokenizer(ALPHABET)))
    assert not fused_on("auto", FUSED_AUTO_VOCAB - 1) and fused_on("auto", FUSED_AUTO_VOCAB)
    assert fused_on("on", 10) and not fused_on("off", 151_936)
    with pytest.raises(ValueError, match="fused_divergence"):
        fused_on("yes", 10)
    with pytest.raises(ValueError, match="fused_divergence"):
        Config(fused_divergence="yes")


def test_auto_is_off_for_the_char_models_and_on_for_a_large_vocabulary(pair):
    assert Config().fused_divergence == "auto" and not make(pair, method="opd").fused
    tok = char_tokenizer(ALPHABET)
    big = dict(layers=1, hidden=16, heads=2, vocab_size=40_000)
    large = type(pair)(
        tiny_qwen3(tok, seed=0, **big), tiny_qwen3(tok, seed=1, **big), tok,
        device=torch.device("cpu"),
    )  # fmt: skip
    tr = Trainer(Config(**{**make(pair).config.to_dict(), "method": "opd"}), large)
    assert tr.fused
    record = tr.train_step()
    assert record["loss"] > 0 and record["divergence"] == pytest.approx(record["loss"])
    assert 0 < record["entropy"] <= torch.log(torch.tensor(40_000.0)).item()


def test_evaluate_kl_to_teacher_equals_the_logits_path(pair):
    tr = make(pair, method="opd")
    kw = dict(max_new_tokens=tr.max_new_tokens, temperature=1.0, teacher=tr.teacher)
    plain = evaluate(tr.student, tr.suite, tr.tok, **kw)
    fused = evaluate(tr.student, tr.suite, tr.tok, fused=True, **kw)
    assert plain.keys() == fused.keys() and plain["rkl_to_teacher"] > 1e-3
    for key in plain:
        assert fused[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-6, nan_ok=True), key


def test_completion_hidden_through_the_head_is_completion_logits(pair):
    tr = make(pair, method="kd")
    roll = tr.rollout([tr.task.sample(random.Random(i)) for i in range(3)])
    seqs = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids)
    weight, bias = head_params(tr.student)
    assert bias is None and weight is tr.student.lm_head.weight
    hidden = completion_hidden(tr.student, *seqs)
    assert hidden.shape == (*roll.completion_ids.shape, weight.shape[1])
    torch.testing.assert_close(hidden @ weight.t(), completion_logits(tr.student, *seqs))


def test_head_params_refuses_a_wrapped_head(pair):
    model = copy.deepcopy(pair.student)

    class LoraLinear(torch.nn.Module):  # the shape of a peft LoRA layer: base_layer + adapter
        def __init__(self, base):
            super().__init__()
            self.base_layer = base

    model.lm_head = LoraLinear(model.lm_head)
    with pytest.raises(TypeError, match="lm_head.*merge"):
        head_params(model)
    model.lm_head = torch.nn.Identity()
    with pytest.raises(TypeError, match="lm_head"):
        head_params(model)


def test_switch_is_a_run_field_and_a_cli_flag(tmp_path):
    assert all("fused_divergence" not in stage_fields(s) for s in STAGES)
    for stage in ("teacher", "student"):
        assert cache_key(Config(fused_divergence="on"), stage) == cache_key(Config(), stage)
    old = Config().to_dict()
    del old["fused_divergence"]  # a checkpoint written before the switch existed
    check_resumable(Config(fused_divergence="on"), old)
    args = build_parser().parse_args(
        ["train", "--method", "opd", "--out", str(tmp_path), "--fused-divergence", "on"]
    )
    assert _config_from_args(args).fused_divergence == "on"
