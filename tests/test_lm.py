"""The language-model plumbing: encoding, position ids, completion logits, log-probs, entropy,
the SFT loop; and the formulas routed through one place (logit gradients, compounding)."""

import math

import numpy as np
import pytest
import torch

from opd_lib import lm
from opd_lib.bounds import compounding_mistakes, dagger_bound_off_policy
from opd_lib.divergences import logit_gradients, token_divergence
from opd_lib.models import tiny_qwen3
from opd_lib.sim.error_propagation import expected_mistakes
from opd_lib.tokenizers import char_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def test_encode_pads_prompts_left_completions_right_and_masks_the_prefix(tok):
    b = lm.encode(tok, ["ab", "abcd"], ["x", "yz"], prefixes=["", "q"])
    assert b.prompt_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert b.completion_ids[0].tolist()[1:] == [eos, pad, pad]
    assert b.completion_ids[1, -1].item() == eos
    assert b.mask.tolist() == [[True, True, False, False], [False, True, True, True]]
    no_eos = lm.encode(tok, ["ab"], ["xy"], eos=False)
    assert no_eos.completion_ids.shape == (1, 2) and no_eos.mask.all()
    with pytest.raises(ValueError, match="prefixes"):
        lm.encode(tok, ["a"], ["b"], prefixes=["", ""])


def test_position_ids_skip_left_padding_so_padding_changes_no_logit(tok):
    assert lm.position_ids(torch.tensor([[0, 0, 1, 1, 1]])).tolist() == [[0, 0, 0, 1, 2]]
    model = tiny_qwen3(tok, 1, 32, 4, seed=0).eval()
    alone = lm.encode(tok, ["abc"], ["xy"])
    padded = lm.encode(tok, ["abc", "abcdefg"], ["xy", "z"])
    with torch.no_grad():
        one = lm.completion_logits(model, alone.prompt_ids, alone.prompt_mask, alone.completion_ids)
        two = lm.completion_logits(
            model, padded.prompt_ids, padded.prompt_mask, padded.completion_ids
        )
        logits, hidden = lm.completion_logits(
            model, alone.prompt_ids, alone.prompt_mask, alone.completion_ids, hidden=True
        )
    torch.testing.assert_close(two[0, :3], one[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(logits, one) and hidden.shape[:2] == one.shape[:2]


def test_token_logprobs_and_entropy_worked_numbers():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]))
    got = lm.token_logprobs(logits, torch.tensor([0, 1]))
    assert got[0].item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert lm.entropy(logits)[0].item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert lm.entropy(logits)[1].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        lm.token_logprobs(logits, torch.tensor([0, 1, 2]))


def test_sft_lowers_the_loss_and_checks_steps(tok):
    model = tiny_qwen3(tok, 1, 32, 4, seed=0)
    batch = lm.encode(tok, ["ab:", "ba:"], ["ba", "ab"])
    losses = lm.sft(model, lambda step: batch, steps=12, lr=1e-2)
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="steps"):
        lm.sft(model, lambda step: batch, steps=-1, lr=1e-2)


@pytest.mark.parametrize("kind", ["fkl", "rkl", "jsd", "tv"])
def test_logit_gradients_equal_autograd(kind):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 7, generator=g, dtype=torch.float64)
    token_divergence(s, t, kind, 0.3).sum().backward()
    torch.testing.assert_close(logit_gradients(s.detach(), t, kind, 0.3), s.grad)
    with pytest.raises(ValueError, match="same shape"):
        logit_gradients(s.detach(), t[:2])


def test_compounding_mistakes_is_the_no_recovery_chain_and_near_the_quadratic_bound():
    for eps, steps in [(0.1, 3), (0.02, 30), (0.0, 5), (1.0, 4)]:
        chain = expected_mistakes(eps, steps, "copy", lost_error_rate=1.0)[-1]
        assert compounding_mistakes(eps, steps) == pytest.approx(chain, abs=1e-12)
    assert compounding_mistakes(0.1, 3) == pytest.approx(0.1 + 0.19 + 0.271)
    small = compounding_mistakes(1e-5, 20)
    assert small == pytest.approx(dagger_bound_off_policy(1e-5, 20), rel=1e-3)
    assert np.isfinite(small)
    with pytest.raises(ValueError, match="eps"):
        compounding_mistakes(1.5, 3)
