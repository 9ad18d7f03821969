"""Tests for opd_lib.lab.models: tiny Qwen3 models, pairs, and offline hub loading."""

from __future__ import annotations

import dataclasses
import hashlib
import socket

import huggingface_hub
import pytest
import torch
from transformers import Qwen3ForCausalLM

from opd_lib.lab import ModelPair, char_tokenizer, load_qwen3_pair, tiny_qwen3, tiny_qwen3_pair
from opd_lib.lab.preflight import preflight

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def test_tiny_qwen3_config(tok):
    model = tiny_qwen3(tok, layers=2, hidden=64, heads=4)
    config = model.config
    assert isinstance(model, Qwen3ForCausalLM)
    assert config.vocab_size == len(tok)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 4)
    assert (config.head_dim, config.num_key_value_heads, config.intermediate_size) == (16, 2, 192)
    assert config.pad_token_id == tok.pad_token_id
    assert config.eos_token_id == tok.eos_token_id
    assert config.max_position_embeddings == 512
    assert config._attn_implementation == "eager"
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight


def test_tiny_qwen3_overrides_and_validation(tok):
    model = tiny_qwen3(
        tok, layers=1, hidden=16, vocab_size=len(tok) + 64, tie_word_embeddings=False
    )
    assert model.config.vocab_size == len(tok) + 64
    assert model.get_output_embeddings().weight.shape == (len(tok) + 64, 16)
    with pytest.raises(ValueError, match="divisible"):
        tiny_qwen3(tok, hidden=30, heads=4)


def test_tiny_qwen3_seeded_and_rng_neutral(tok):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_qwen3(tok, layers=1, hidden=16, seed=7)
    assert torch.equal(torch.rand(3), expected)  # the global RNG stream is untouched
    b = tiny_qwen3(tok, layers=1, hidden=16, seed=7)
    c = tiny_qwen3(tok, layers=1, hidden=16, seed=8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_tiny_qwen3_forward_and_left_padded_generate(tok):
    model = tiny_qwen3(tok, layers=1, hidden=16).eval()
    batch = tok(["ab", "hello there"], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)


def test_tiny_qwen3_pair(tok):
    pair = tiny_qwen3_pair(tok)
    assert isinstance(pair, ModelPair)
    assert pair.tokenizer is tok and pair.teacher_tokenizer is tok
    assert pair.device == torch.device("cpu")
    assert (pair.teacher.config.num_hidden_layers, pair.teacher.config.hidden_size) == (4, 128)
    assert (pair.student.config.num_hidden_layers, pair.student.config.hidden_size) == (2, 64)
    assert pair.teacher.config.vocab_size == pair.student.config.vocab_size == len(tok)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.student = pair.teacher
    custom = tiny_qwen3_pair(tok, teacher=dict(layers=1, hidden=32), student=dict(hidden=16))
    assert custom.teacher.config.hidden_size == 32 and custom.student.config.num_hidden_layers == 2


def _save_as_hub_repo(cache, repo_id, model, tokenizer):
    """Lay a model out as huggingface_hub's cache does: snapshots/<commit>/ plus refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_load_qwen3_pair_offline_from_hub_cache(tok, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _save_as_hub_repo(cache, "Qwen/Qwen3-1.7B", tiny_qwen3(tok, layers=2, hidden=32), tok)
    _save_as_hub_repo(cache, "Qwen/Qwen3-0.6B", tiny_qwen3(tok, layers=1, hidden=16), tok)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; make it effective for this test.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    attempts = []  # recorded, since the hub client would swallow an exception raised here

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)

    pair = load_qwen3_pair(cache_dir=str(cache))

    assert attempts == []

    assert isinstance(pair, ModelPair)
    assert pair.teacher.config.hidden_size == 32 and pair.student.config.hidden_size == 16
    assert pair.teacher.dtype == pair.student.dtype == torch.bfloat16
    assert pair.tokenizer is not pair.teacher_tokenizer
    assert pair.tokenizer.padding_side == pair.teacher_tokenizer.padding_side == "left"
    assert pair.tokenizer.get_vocab() == tok.get_vocab()
    report = preflight(pair.student, pair.teacher, pair.tokenizer, pair.teacher_tokenizer)
    assert report.tokenizer_size == len(tok)


def test_qwen3_configs_are_the_published_shapes():
    """The offline configurations match the memory estimator's published shapes (596 M and
    1,721 M parameters at 28 layers), and stop like the hub's generation config."""
    from opd_lib.lab.memory import QWEN3_0_6B, QWEN3_1_7B, ModelShape
    from opd_lib.models import QWEN3_CONFIGS, QWEN3_GENERATION_STOP

    for name, shape in (("Qwen/Qwen3-0.6B", QWEN3_0_6B), ("Qwen/Qwen3-1.7B", QWEN3_1_7B)):
        assert ModelShape.from_config(QWEN3_CONFIGS[name]) == shape
    assert round(QWEN3_0_6B.n_params() / 1e6) == 596
    assert round(QWEN3_1_7B.n_params() / 1e6) == 1721
    assert QWEN3_GENERATION_STOP == (151_645, 151_643)


def test_qwen3_offline_builds_the_real_width_seeded():
    from opd_lib.models import qwen3_offline

    torch.manual_seed(5)
    a = qwen3_offline("Qwen/Qwen3-0.6B", layers=1, seed=3, dtype=torch.bfloat16)
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))  # the global RNG is untouched
    c = a.config
    shape = (c.vocab_size, c.hidden_size, c.num_attention_heads, c.head_dim)
    assert shape == (151_936, 1024, 16, 128)
    assert c.num_hidden_layers == 1 and a.lm_head.weight is a.model.embed_tokens.weight
    assert a.lm_head.weight.dtype == torch.bfloat16
    assert float(a.lm_head.weight.float().std()) == pytest.approx(0.02, rel=0.01)
    assert a.generation_config.eos_token_id == [151_645, 151_643]
    with pytest.raises(ValueError, match="name"):
        qwen3_offline("Qwen/Qwen3-8B")


def test_restrict_logits_masks_padding_and_folds_the_stop_ids(tok):
    """A model with 6 padded logits and a second stop id: sampling never draws a padded id or the
    second stop; the EOS logit becomes logsumexp of both stops, so the probability of stopping
    is unchanged; a vocabulary without either is left alone."""
    from opd_lib.models import restrict_logits
    from opd_lib.sampling import completion_mask, sample_completions

    n, eos, other = len(tok), tok.eos_token_id, tok.pad_token_id
    model = tiny_qwen3(tok, layers=1, hidden=16, vocab_size=n + 6).eval()
    with torch.no_grad():  # make the padded ids and the second stop the likeliest tokens
        model.lm_head.weight[n:] *= 50
        model.lm_head.weight[other] *= 20
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        raw = model(ids).logits[0, -1]
    assert restrict_logits(model, n, (eos, other))
    with torch.no_grad():
        got = model(ids).logits[0, -1]
    lowest = torch.finfo(got.dtype).min
    assert raw.argmax() >= n and got.argmax() < n
    assert (got[n:] == lowest).all() and got[other] == lowest
    stop = torch.logsumexp(raw[[eos, other]], 0)
    assert got[eos] == pytest.approx(stop.item(), abs=1e-5)
    keep = [i for i in range(n) if i not in (eos, other)]
    assert torch.equal(got[keep], raw[keep])
    gen, prompts = torch.Generator().manual_seed(0), ids.repeat(8, 1)
    samples = sample_completions(model, prompts, torch.ones_like(prompts), 12, 1.0, gen, eos, other)
    drawn = samples[completion_mask(samples, eos)]  # what was sampled (pad only after the EOS)
    assert drawn.max() < n and not (drawn == other).any()
    assert restrict_logits(model, n, (eos, other))  # idempotent
    with pytest.raises(ValueError, match="already"):
        restrict_logits(model, n - 1, (eos,))
    plain = tiny_qwen3(tok, layers=1, hidden=16)
    assert not restrict_logits(plain, n, (eos,))  # nothing to restrict: no hook
