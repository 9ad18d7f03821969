"""Memory of one distillation run, estimated from the model shapes before anything is allocated.

``estimate_memory(student, teacher, ...)`` returns bytes per component and the peak; ``refuse_if
_too_big`` turns an estimate that exceeds a card into a ``MemoryError`` that names the largest
component and a preset that fits. All sizes follow from the config (``ModelShape``) and the run's
shapes; what the formulas count, per component:

* ``student_weights``: float32 master weights (``fp32``, ``bf16-amp``, ``fp16-amp``), or bf16
  (``bf16``, pure half precision); with LoRA, the frozen base in the compute dtype plus float32
  adapters ``r (d_in + d_out)`` per adapted linear. Under autocast, each matmul weight is cast to
  half once per forward and cached: ``+2`` bytes per base parameter.
* ``teacher_weights``: ``P_T x`` the teacher dtype's size (frozen).
* ``gradients``: one per trainable parameter (float32 with master weights).
* ``optimizer``: AdamW's two moments per trainable parameter. The ``foreach`` step (torch's
  default) also makes one parameter-sized temporary; it is counted at the step, not here.
* ``activations``: what the student's forward saves for backward, per token and layer
  ``(6A + 2K + 4I) b + 6H x 4`` (``A`` query width, ``K`` key/value width, ``I`` MLP width, ``b``
  bytes of the compute dtype; the ``6H`` of RMSNorm internals are float32), plus ``A b`` more with
  SDPA or the float32 attention probabilities ``heads x T x 4`` with eager attention. Gradient
  checkpointing keeps one ``[N, H]`` input per layer and recomputes one layer at a time.
* ``kv_cache``: sampling: ``2 L K b`` per token of every sequence sampled at once, and three
  float32 ``[rows, V]`` arrays per decoding step (the prompt's prefill keeps the last position's
  logits only).
* ``loss_transients``: fused divergence: the gradient of the student's hidden states ``[N, H]``,
  the teacher's hidden states, and a few ``[chunk, V]`` float32 scratch arrays; unfused: both
  models' full logits ``[rows, T, V]`` and about eight float32 ``[M, V]`` arrays for the ``M``
  scored tokens (log-softmaxes, probabilities, their gradients).
* ``eval_scoring``: the evaluation's KL to the teacher on ``eval_rows`` sampled completions (no
  gradients): the same as the loss, without the gradients' arrays.

The peak is ``static + max(sampling, evaluation, forward/backward, optimizer step)``: weights,
teacher and optimizer states live throughout; gradients exist from the first backward (all of
them during accumulation, only the LM head's in a single micro-batch) to the step. Accuracy
against measured CPU peaks: ``benchmarks/memory_estimate.py`` (``results/memory/cpu.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FUSED_AUTO_VOCAB",
    "GIB",
    "LINEARS",
    "PRECISIONS",
    "QWEN3_0_6B",
    "QWEN3_1_7B",
    "MemoryEstimate",
    "ModelShape",
    "estimate_memory",
    "fused_on",
    "estimate_for_settings",
    "estimate_measured_step",
    "refuse_if_too_big",
]

GIB = 2**30
PRECISIONS = ("fp32", "bf16-amp", "fp16-amp", "bf16")
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# "auto" fuses from this vocabulary size: a float32 [tokens, V] logits array then costs >= 128 KiB
# per token (Qwen3's 151,936: 594 KiB), while the tiny char models (~80 symbols) keep the plain
# path, so their committed results stay bit-identical
FUSED_AUTO_VOCAB = 32_768
_DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Qwen3 decoder (the fields of ``Qwen3Config`` that set its memory)."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "tied" and not (isinstance(v, int) and v > 0):
                raise ValueError(f"{f.name} must be a positive int, got {v!r}")

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """From a ``Qwen3Config`` (or a dict of its fields)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        hidden, heads = get("hidden_size"), get("num_attention_heads")
        return cls(
            vocab=get("vocab_size"),
            hidden=hidden,
            layers=get("num_hidden_layers"),
            heads=heads,
            kv_heads=get("num_key_value_heads") or heads,
            head_dim=get("head_dim") or hidden // heads,
            intermediate=get("intermediate_size"),
            tied=bool(get("tie_word_embeddings", True)),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``(d_in, d_out)`` of each linear layer of one decoder layer."""
        h, a, k, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, 0
        i = self.intermediate
        return {"q_proj": (h, a), "k_proj": (h, k), "v_proj": (h, k), "o_proj": (a, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip

    def n_params(self) -> int:
        """Parameters: embeddings (and an untied head), per layer the linears (no biases), two
        RMSNorms of ``H`` and the query/key norms of ``head_dim``, and the final norm."""
        per_layer = sum(i * o for i, o in self.linear_shapes().values())
        per_layer += 2 * self.hidden + 2 * self.head_dim
        head = 0 if self.tied else self.vocab * self.hidden
        return self.vocab * self.hidden + head + self.layers * per_layer + self.hidden

    def lora_params(self, rank: int, modules: tuple[str, ...] = LINEARS) -> int:
        """Adapter parameters of rank ``rank`` on ``modules`` of every layer."""
        shapes = self.linear_shapes()
        unknown = sorted(set(modules) - set(shapes))
        if unknown:
            raise ValueError(f"lora_modules has unknown modules {unknown}; expected {LINEARS}")
        return self.layers * sum(rank * sum(shapes[m]) for m in modules)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Key/value cache per token of one sequence: ``2 L K b``."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


# Published config.json values (Qwen/Qwen3-0.6B and Qwen/Qwen3-1.7B on the Hugging Face hub).
QWEN3_0_6B = ModelShape(151_936, 1024, 28, 16, 8, 128, 3072)
QWEN3_1_7B = ModelShape(151_936, 2048, 28, 16, 8, 128, 6144)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per component, the peak (``total``) and the phase that sets it."""

    components: dict[str, int]
    total: int
    phase: str
    settings: dict[str, Any]

    def gib(self) -> dict[str, float]:
        """Components and total in GiB, rounded to 0.01."""
        out = {k: round(v / GIB, 2) for k, v in self.components.items()}
        return out | {"total": round(self.total / GIB, 2)}

    def table(self) -> str:
        """A two-column text table (GiB)."""
        rows = [f"{k:18} {v:7.2f}" for k, v in self.gib().items()]
        return "\n".join(rows + [f"(peak in the {self.phase} phase)"])


def _layer_activation_bytes(m: ModelShape, tokens: int, seq: int, b: int, amp: bool, attn: str):
    a, k = m.heads * m.head_dim, m.kv_heads * m.head_dim
    per_token = (6 * a + 2 * k + 4 * m.intermediate) * b + 6 * m.hidden * 4
    per_token += 2 * m.hidden * b if amp else 0  # half copies of the norms' outputs
    per_token += a * b if attn == "sdpa" else m.heads * seq * 4
    return tokens * per_token


def _loss_bytes(s: ModelShape, t: ModelShape | None, rows: int, seq: int, completion: int,
                b: int, t_b: int, fused: bool, chunk: int, attn: str, grads: bool = True,
                ) -> int:  # fmt: skip
    """Transients of the loss (or, ``grads=False``, of the evaluation's KL) on ``rows``
    sequences: fused, ``[N, H]`` hidden states and ``[chunk, V]`` scratch (8 x 64 = 512 rows of
    ``V``, the measured peak of the 64-token kernel; the auto-sized kernel holds 2 x 256 + 12 =
    524 rows from about 2,000 tokens on, within 3 % of it); unfused, the full
    logits and float32 ``[M, V]`` arrays for the ``M`` scored tokens: 8 with gradients (measured,
    ``benchmarks/memory_estimate.py``), 9 without (the two kinds of KL one after the other:
    6.6 MB per token measured at V = 151,936, 2 of the 10.9 arrays being the logits);
    ``t=None``: the student's token log-probabilities only."""
    n, scored, v = rows * seq, rows * completion, s.vocab
    if t is None:
        return n * s.hidden * 4 + 4 * chunk * v * 4 if fused else n * v * b + 3 * scored * v * 4
    arrays = 8 if grads else 9
    if fused:
        out = n * (s.hidden * (4 if grads else b) + t.hidden * t_b) + arrays * chunk * v * 4
    else:
        out = n * v * (b + t_b) + arrays * scored * v * 4
    return out + _layer_activation_bytes(t, n, seq, t_b, False, attn) // 2  # teacher forward


def estimate_memory(
    student: ModelShape,
    teacher: ModelShape | None = None,
    *,
    teacher_in_loss: bool = True,
    precision: str = "bf16-amp",
    teacher_dtype: str = "bfloat16",
    lora_rank: int = 0,
    lora_modules: tuple[str, ...] = LINEARS,
    micro_batch: int = 2,
    accumulation: bool = True,
    sample_rows: int = 8,
    eval_rows: int = 8,
    prompt_len: int = 256,
    completion_len: int = 512,
    gradient_checkpointing: bool = False,
    fused_divergence: bool = True,
    chunk_size: int = 64,
    attention: str = "sdpa",
    optimizer_foreach: bool = True,
    overhead_gib: float = 0.0,
) -> MemoryEstimate:
    """Estimated peak memory (bytes) of a training run; see the module docstring for the formulas.

    ``micro_batch``: sequences per forward/backward (``rl``: prompts x group size);
    ``accumulation``: more than one micro-batch per step (gradients then coexist with the next
    micro-batch's activations); ``sample_rows``: sequences sampled at once (rollout or evaluation
    micro-batch); ``eval_rows``: sequences scored at once in evaluation (0 for both: training
    steps only, as in the CPU benchmark); ``teacher=None``: no teacher in memory;
    ``teacher_in_loss=False``: the loss is the student's own token log-probabilities (SFT, RL;
    the teacher, if given, only sits in memory); ``overhead_gib``: CUDA context and allocator
    slack (0 on CPU).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if teacher_dtype not in _DTYPE_BYTES:
        raise ValueError(f"teacher_dtype must be one of {sorted(_DTYPE_BYTES)}")
    if attention not in ("sdpa", "eager"):
        raise ValueError(f"attention must be 'sdpa' or 'eager', got {attention!r}")
    sizes = dict(micro_batch=micro_batch, sample_rows=sample_rows, eval_rows=eval_rows,
                 prompt_len=prompt_len, completion_len=completion_len,
                 chunk_size=chunk_size)  # fmt: skip
    for name, v in sizes.items():
        if not (isinstance(v, int) and v >= (0 if name in ("sample_rows", "eval_rows") else 1)):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(lora_rank, int) and lora_rank >= 0):
        raise ValueError(f"lora_rank must be an int >= 0, got {lora_rank!r}")
    if teacher is not None and teacher.vocab != student.vocab:
        raise ValueError(f"vocab differs: student {student.vocab}, teacher {teacher.vocab}")

    amp = precision.endswith("-amp")
    b = 4 if precision == "fp32" else 2  # compute (activation) dtype
    master = 2 if precision == "bf16" else 4  # trainable parameters, their grads and moments
    p_s = student.n_params()
    if lora_rank:
        p_train = student.lora_params(lora_rank, lora_modules)
        weights = p_s * b + p_train * master
        head_grad = 0
    else:
        p_train = p_s
        weights = p_s * master + (2 * p_s if amp else 0)  # + autocast's cached half copies
        head_grad = student.vocab * student.hidden * master
    teacher_weights = teacher.n_params() * _DTYPE_BYTES[teacher_dtype] if teacher else 0
    gradients = p_train * master
    optimizer = 2 * p_train * master
    step_temp = p_train * master if optimizer_foreach else 0

    seq = prompt_len + completion_len
    n = micro_batch * seq
    layer = _layer_activation_bytes(student, n, seq, b, amp, attention)
    if gradient_checkpointing:
        activations = student.layers * n * student.hidden * b + 2 * layer
    else:
        activations = student.layers * layer + layer  # + one layer of backward workspace
    activations += n * student.hidden * (b + 3 * 4)  # embeddings, final norm

    t_b = _DTYPE_BYTES[teacher_dtype]
    opts = (b, t_b, fused_divergence, chunk_size, attention)
    loss = _loss_bytes(student, teacher if teacher_in_loss else None, micro_batch, seq,
                       completion_len, *opts)  # fmt: skip
    eval_scoring = 0
    if (
        teacher is not None and eval_rows
    ):  # evaluation: KL to the teacher on sampled completions, no grads
        eval_scoring = _loss_bytes(student, teacher, eval_rows, seq, completion_len, *opts,
                                   grads=False)  # fmt: skip
    kv_per_token = max(
        student.kv_bytes_per_token(b), teacher.kv_bytes_per_token(t_b) if teacher else 0
    )
    kv_cache = sample_rows * seq * kv_per_token + 3 * sample_rows * student.vocab * 4
    overhead = int(overhead_gib * GIB)
    static = weights + teacher_weights + optimizer + overhead
    phases = {
        "sampling": kv_cache,
        "evaluation": eval_scoring,
        "forward/backward": (gradients if accumulation else head_grad) + activations + loss,
        "optimizer step": gradients + step_temp,
    }
    if not accumulation:
        phases["forward/backward"] = max(phases["forward/backward"], gradients)
    phase = max(phases, key=phases.get)
    components = {
        "student_weights": weights,
        "teacher_weights": teacher_weights,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "kv_cache": kv_cache,
        "loss_transients": loss,
        "eval_scoring": eval_scoring,
        "overhead": overhead,
    }
    settings = sizes | dict(precision=precision, teacher_dtype=teacher_dtype, lora_rank=lora_rank,
                            gradient_checkpointing=gradient_checkpointing, attention=attention,
                            fused_divergence=fused_divergence)  # fmt: skip
    return MemoryEstimate(components, static + phases[phase], phase, settings)


def fused_on(setting: str, vocab_size: int) -> bool:
    """Whether ``fused_divergence=setting`` fuses at ``vocab_size`` ("auto": from
    :data:`FUSED_AUTO_VOCAB` symbols on)."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"fused_divergence must be 'auto', 'on' or 'off', got {setting!r}")
    return setting == "on" or (setting == "auto" and vocab_size >= FUSED_AUTO_VOCAB)


def estimate_for_settings(
    settings: Any, student: ModelShape = QWEN3_0_6B, teacher: ModelShape | None = QWEN3_1_7B
) -> MemoryEstimate:
    """:func:`estimate_memory` for a lab run: ``settings`` is a preset dict
    (``presets.HUB_PRESETS``) or a ``Config`` with the hub fields (``precision``, ``lora_rank``,
    ``gradient_checkpointing``, ``micro_batch_size``, ``batch_size``, ``group_size``, ``method``,
    ``max_prompt_tokens``, ``max_new_tokens``, ``fused_divergence``, ``teacher_dtype``,
    ``eval_micro_batch_size``).
    OPSD's self-teacher is costed as the (larger) teacher: an upper bound."""
    s = settings if isinstance(settings, dict) else dataclasses.asdict(settings)
    group = s.get("group_size", 4) if s.get("method") == "rl" else 1
    micro, batch = s.get("micro_batch_size", 2) * group, s.get("batch_size", 8) * group
    return estimate_memory(
        student,
        teacher,  # loaded for every method (evaluation's KL to the teacher)
        teacher_in_loss=s.get("method", "opd") in ("kd", "gkd", "opd", "opsd"),
        precision=s.get("precision", "bf16-amp"),
        teacher_dtype=s.get("teacher_dtype", "bfloat16"),
        lora_rank=s.get("lora_rank", 0),
        lora_modules=tuple(s.get("lora_modules", LINEARS)),
        micro_batch=micro,
        accumulation=batch > micro,
        sample_rows=max(batch, s.get("eval_micro_batch_size", 8)),
        eval_rows=s.get("eval_micro_batch_size", 8),
        prompt_len=s.get("max_prompt_tokens", 256),
        completion_len=s.get("max_new_tokens", 512),
        gradient_checkpointing=s.get("gradient_checkpointing", False),
        fused_divergence=fused_on(s.get("fused_divergence", "on"), student.vocab),
        overhead_gib=s.get("memory_overhead_gib", 0.0),
    )


def refuse_if_too_big(
    estimate: MemoryEstimate, budget_gib: float, presets: dict[str, dict] | None = None
) -> None:
    """Raise ``MemoryError`` when ``estimate.total`` exceeds ``budget_gib``, naming the largest
    component and the presets (from ``presets``, each with a ``memory_budget_gib``) that fit."""
    if estimate.total <= budget_gib * GIB:
        return
    gib = estimate.gib()
    biggest = max(estimate.components, key=estimate.components.get)
    fitting = [
        name
        for name, p in (presets or {}).items()
        if estimate_for_settings(p).total <= min(budget_gib, p["memory_budget_gib"]) * GIB
    ]
    hint = f"; presets that fit {budget_gib:g} GiB: {fitting}" if fitting else ""
    raise MemoryError(
        f"estimated peak {gib['total']} GiB exceeds the budget of {budget_gib:g} GiB (largest "
        f"component: {biggest}, {gib[biggest]} GiB; peak in the {estimate.phase} phase){hint}"
    )


def estimate_measured_step(record: dict) -> MemoryEstimate:
    """The estimate for one shape that ``benchmarks/memory_estimate.py`` measured on CPU: a single
    fp32 training step, no sampling or evaluation, eager attention (``record`` as in
    ``results/memory/cpu.json``)."""
    return estimate_memory(
        ModelShape(**record["student"]), ModelShape(**record["teacher"]), precision="fp32",
        teacher_dtype="float32", micro_batch=record["micro_batch"], accumulation=False,
        sample_rows=0, eval_rows=0, prompt_len=record["prompt_len"],
        completion_len=record["completion_len"], attention="eager",
        gradient_checkpointing=record["gradient_checkpointing"],
        fused_divergence=record["fused_divergence"],
    )  # fmt: skip
