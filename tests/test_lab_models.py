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
