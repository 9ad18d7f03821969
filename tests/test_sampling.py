"""opd_lib.sampling: reproducible sampling and the completion mask."""

from types import SimpleNamespace

import pytest
import torch

from opd_lib.gkd import completion_logits
from opd_lib.lab.models import tiny_qwen3
from opd_lib.lab.tokenizers import char_tokenizer
from opd_lib.sampling import completion_mask, sample_completions

EOS = 2


@pytest.fixture(scope="module")
def model():
    tok = char_tokenizer()
    return tiny_qwen3(tok, layers=1, hidden=32, heads=2, seed=3)


def _prompts():
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10], [0, 11, 12, 13]])
    return ids, (ids != 0).long()


def test_completion_mask_keeps_the_first_eos_and_drops_what_follows():
    ids = torch.tensor([[5, 6, EOS, 7, EOS], [EOS, 5, 5, 5, 5], [5, 6, 7, 8, 9]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(completion_mask(ids, EOS), expected)


def test_completion_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="batch, length"):
        completion_mask(torch.tensor([1, 2, 3]), EOS)
    with pytest.raises(ValueError, match="integer"):
        completion_mask(torch.zeros(2, 3), EOS)


def test_sampling_is_deterministic_given_the_generator(model):
    ids, mask = _prompts()
    a = sample_completions(model, ids, mask, 12, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG must not matter
    b = sample_completions(model, ids, mask, 12, generator=torch.Generator().manual_seed(7))
    c = sample_completions(model, ids, mask, 12, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_greedy_kv_cached_loop_matches_a_full_forward_pass(model):
    ids, mask = _prompts()
    out = sample_completions(model, ids, mask, 10, temperature=0.0, eos_token_id=EOS)
    logits = completion_logits(model, ids, mask, out)
    keep = completion_mask(out, EOS)
    assert torch.equal(out[keep], logits.argmax(-1)[keep])


class _UniformLM(torch.nn.Module):
    """Next token uniform over a 4-token vocabulary {0: pad, 1, EOS=2, 3}; no cache."""

    config = SimpleNamespace(eos_token_id=EOS)

    def forward(self, input_ids, **kwargs):
        logits = torch.zeros(*input_ids.shape, 4)
        return SimpleNamespace(logits=logits, past_key_values=None)


def test_tokens_after_eos_are_padding():
    ids = torch.ones(64, 3, dtype=torch.long)
    out = sample_completions(
        _UniformLM(),
        ids,
        torch.ones_like(ids),
        20,
        generator=torch.Generator().manual_seed(0),
        pad_token_id=0,
    )
    keep = completion_mask(out, EOS)
    assert (out == EOS).any(dim=1).all()  # with 20 draws at p = 1/4 every row stopped
    assert torch.all(out[~keep] == 0)  # only padding after the first EOS
    first = (out == EOS).int().argmax(dim=1)
    assert torch.equal(keep.sum(dim=1), first + 1)


def test_sampling_rejects_bad_input(model):
    ids, mask = _prompts()
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_completions(model, ids, mask, 0)
    with pytest.raises(ValueError, match="temperature"):
        sample_completions(model, ids, mask, 3, temperature=-1.0)
    with pytest.raises(ValueError, match="left padded"):
        sample_completions(model, ids, torch.flip(mask, [1]), 3)
    with pytest.raises(ValueError, match="batch, length"):
        sample_completions(model, ids[0], mask[0], 3)
