import pytest
import torch

from opd_lib.divergences import token_divergence
from opd_lib.lab import char_tokenizer, tiny_qwen3
from opd_lib.opsd import (
    clip_per_token,
    clip_pointwise,
    gather_positions,
    hinted_teacher_inputs,
    opsd_loss,
    top_k_share,
)


def _pivot():
    q = torch.tensor([0.01, 0.90, 0.05, 0.04], dtype=torch.float64).log().view(1, 1, 4)
    p = torch.tensor([0.60, 0.30, 0.05, 0.05], dtype=torch.float64).log().view(1, 1, 4)
    return q, p


def test_pointwise_clip_can_be_negative_per_token_cannot():
    q, p = _pivot()
    pointwise = clip_pointwise(q, p, kind="fkl", max_value=0.05)
    per_token = clip_per_token(token_divergence(q, p, "fkl"), 0.05)
    assert pointwise.item() < 0
    assert per_token.item() >= 0
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 9, 30, generator=gen), torch.randn(4, 9, 30, generator=gen)
    assert (clip_per_token(token_divergence(s, t, "fkl"), 0.05) >= 0).all()


def test_a_token_above_the_cap_contributes_exactly_the_cap_and_no_gradient():
    d = torch.tensor([[0.01, 4.1, 0.03]], requires_grad=True)
    out = clip_per_token(d, 0.5)
    assert out[0, 1].item() == 0.5
    assert torch.equal(out[0, [0, 2]], d[0, [0, 2]].detach())
    out.sum().backward()
    assert d.grad.tolist() == [[1.0, 0.0, 1.0]]


def test_rescale_keeps_values_and_scales_the_gradient():
    d = torch.tensor([0.2, 4.0], requires_grad=True)
    out = clip_per_token(d, 0.5, mode="rescale")
    assert torch.allclose(out, torch.tensor([0.2, 0.5]))
    out.sum().backward()
    assert torch.allclose(d.grad, torch.tensor([1.0, 0.125]))


def test_pointwise_matches_unclipped_with_a_large_cap_and_respects_the_mask():
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 11, generator=gen), torch.randn(2, 5, 11, generator=gen)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    big = clip_pointwise(s, t, mask, "fkl", 1e6)
    assert torch.allclose(big, token_divergence(s, t, "fkl", mask=mask), atol=1e-6)
    assert (big[1, 3:] == 0).all()


def test_opsd_loss_modes():
    q, p = _pivot()
    assert opsd_loss(q, p, clip="token", max_value=0.05).item() == pytest.approx(0.05)
    assert opsd_loss(q, p, clip="pointwise", max_value=0.05).item() < 0
    with pytest.raises(ValueError, match="clip"):
        opsd_loss(q, p, clip="both")


def test_top_k_share():
    d = torch.tensor([[0.0, 3.0, 1.0], [0.5, 0.5, 0.0]])
    assert top_k_share(d, 1) == pytest.approx(3.0 / 5.0)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    assert top_k_share(d, 1, mask) == pytest.approx(1.0 / 2.0)
    with pytest.raises(ValueError):
        top_k_share(d, 0)
    with pytest.raises(ValueError):
        top_k_share(-d, 1)


@pytest.fixture(scope="module")
def tiny():
    tok = char_tokenizer()
    return tok, tiny_qwen3(tok, layers=1, hidden=32, heads=2, seed=0).eval()


def test_alignment_empty_hint_teacher_equals_student(tiny):
    tok, model = tiny
    comp = torch.tensor(tok(["xyz1", "ab c"], add_special_tokens=False)["input_ids"])
    prompts = ["what is 2+2?", "hi"]  # different lengths: left padding differs per row
    student = hinted_teacher_inputs(tok, prompts, ["", ""], comp)
    teacher = hinted_teacher_inputs(tok, prompts, ["", ""], comp)
    assert torch.equal(student.input_ids, teacher.input_ids)
    with torch.no_grad():
        logits = model(input_ids=teacher.input_ids, attention_mask=teacher.attention_mask).logits
    aligned = gather_positions(logits, teacher.positions)
    # Each row on its own, unpadded: log p(completion token j | prompt, completion_<j).
    for b, prompt in enumerate(prompts):
        ids = tok(prompt, add_special_tokens=False)["input_ids"] + comp[b].tolist()
        with torch.no_grad():
            own = model(input_ids=torch.tensor([ids])).logits[0]
        P = len(ids) - comp.shape[1]
        expected = own[P - 1 : len(ids) - 1].log_softmax(-1)
        assert torch.allclose(aligned[b].log_softmax(-1), expected, atol=1e-4)


def test_hint_sits_between_prompt_and_completion(tiny):
    tok, _ = tiny
    comp = tok(["ok"], add_special_tokens=False)["input_ids"]
    out = hinted_teacher_inputs(tok, ["q:"], ["(a)"], comp)
    assert tok.decode(out.input_ids[0]) == "q:(a)ok"
    assert out.positions.tolist() == [[4, 5]]  # ")" predicts 'o', 'o' predicts 'k'
    assert out.input_ids[0, out.positions[0] + 1].tolist() == comp[0]


@pytest.mark.parametrize(
    "args, match",
    [
        (("q", [""], [[5]]), "lists"),
        ((["q"], ["", ""], [[5]]), "hints"),
        ((["q", "r"], ["", ""], [[5]]), "completions"),
        ((["q", "r"], ["", ""], [[5], [5, 6]]), "different lengths"),
        ((["q"], [""], [[]]), "empty"),
        ((["q"], [""], [[10_000]]), "token id"),
        ((["q"], [""], torch.tensor([[1.5]])), "integer"),
        (([], [], []), "empty batch"),
    ],
)
def test_bad_inputs(tiny, args, match):
    tok, _ = tiny
    with pytest.raises(ValueError, match=match):
        hinted_teacher_inputs(tok, *args)


def test_bad_clip_inputs():
    q, p = _pivot()
    with pytest.raises(ValueError, match="max_value"):
        clip_per_token(torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        clip_per_token(torch.tensor([float("nan")]), 1.0)
    with pytest.raises(ValueError, match="mode"):
        clip_per_token(torch.ones(3), 1.0, mode="soft")
    with pytest.raises(ValueError, match="shape"):
        clip_pointwise(q, p[..., :3])
    with pytest.raises(ValueError, match="mask must be a boolean"):
        clip_pointwise(q, p, mask=torch.ones(1, 1))
    with pytest.raises(ValueError, match="mask shape"):
        clip_pointwise(q, p, mask=torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="kind"):
        clip_pointwise(q, p, kind="hellinger")
