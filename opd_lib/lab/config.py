"""Every hyperparameter of a lab run in one dataclass, each field tagged with what it affects.

Field metadata replaces hand-kept lists of names:

* ``stage`` (required of every field): the prepared-pair stage the field changes (``"shared"``,
  ``"teacher-clean"``, ``"teacher"``, ``"student"``) or ``"run"`` (the run alone);
  :func:`opd_lib.lab.pair.cache_key` hashes exactly the stage fields, so a new field must say
  where it belongs and cannot be silently left out of the cached pair's key;
* ``choices``: the allowed values; ``unit``: must lie in [0, 1]; ``positive``: an int >= 1;
* ``resumable``: may differ when a run resumes from its checkpoint (bookkeeping only);
* ``flag``: the CLI has a ``--flag`` for it (every field also has ``--set key=value``);
* ``methods``: the methods whose loss or rollout reads the field (:func:`method_knobs`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opd_lib.lab.memory import FUSED_AUTO_VOCAB, LINEARS, PRECISIONS, fused_on
from opd_lib.lab.tasks import RunningSum

__all__ = [
    "DTYPES",
    "METHODS",
    "STAGES",
    "FUSED_AUTO_VOCAB",
    "Config",
    "check_resumable",
    "choices",
    "flag_fields",
    "fused_on",
    "method_knobs",
    "refuse_foreign_checkpoint",
    "stage_fields",
]

METHODS = ("sft", "kd", "gkd", "opd", "rl", "opsd")
DTYPES = ("float32", "bfloat16", "float16")
STAGES = ("shared", "teacher-clean", "teacher", "student")


def _f(default: Any, stage: str, **meta: Any) -> Any:
    if stage not in (*STAGES, "run"):
        raise ValueError(f"stage must be one of {STAGES} or 'run', got {stage!r}")
    return dataclasses.field(default=default, metadata={"stage": stage, **meta})


@dataclass
class Config:
    """Every hyperparameter of a lab run (see ``presets.py`` for named sets)."""

    method: str = _f("opd", "run", choices=METHODS)
    seed: int = _f(0, "run", flag=True)  # the RNG seed of the run (sampling and data order)
    steps: int = _f(20, "run", positive=True, resumable=True, flag=True)
    # task
    # "sum" (running sum mod 10) or "gsm8k" (hub)
    task: str = _f("sum", "run", choices=("sum", "gsm8k"))
    min_len: int = _f(2, "shared")  # chain lengths trained on
    max_len: int = _f(6, "shared")
    eval_lengths: tuple[int, ...] = _f((2, 4, 6), "run")
    eval_size: int = _f(16, "run", positive=True)  # eval prompts per chain length
    eval_temperature: float = _f(0.0, "run")  # 0: greedy evaluation; 1: the policy's own samples
    retention: bool = _f(True, "run")  # evaluate the retention task (reverse a string)
    retention_min_len: int = _f(3, "student")  # lengths of the strings to reverse
    retention_max_len: int = _f(6, "student")
    # what the OPSD hint reveals: "answer" or the whole "trace"
    hint: str = _f("trace", "shared", choices=("answer", "trace"))
    # running-sum format: "plain" (sum 3452) or "tagged" (sum a3b4c5d2)
    trace_style: str = _f("plain", "shared", choices=("plain", "tagged"))
    # models
    model: str = _f("tiny", "run", choices=("tiny", "hub"))  # "tiny" (offline) or "hub" (Qwen3)
    teacher_layers: int = _f(2, "teacher-clean")
    teacher_hidden: int = _f(64, "teacher-clean")
    teacher_heads: int = _f(4, "teacher-clean")
    student_layers: int = _f(1, "student")
    student_hidden: int = _f(32, "student")
    student_heads: int = _f(4, "student")
    model_seed: int = _f(0, "shared")  # RNG seed of the initial weights and pair data
    teacher_name: str = _f("Qwen/Qwen3-1.7B", "run")
    student_name: str = _f("Qwen/Qwen3-0.6B", "run")
    dtype: str = _f("float32", "run", choices=DTYPES)  # the student's load dtype
    teacher_dtype: str = _f("float32", "run", choices=DTYPES)  # the frozen teacher's dtype
    device: str = _f("cpu", "run", resumable=True, flag=True)
    # "fp32"; "bf16-amp" / "fp16-amp": float32 master weights and optimizer state, the forward and
    # backward under autocast (fp16 with a gradient scaler); "bf16": pure half precision, refused
    # at a learning rate whose updates round away (opd_lib.lab.precision)
    precision: str = _f("fp32", "run", choices=PRECISIONS)
    # LoRA on the student (peft): 0 is a full fine-tune; else adapters of this rank on lora_modules
    lora_rank: int = _f(0, "run")
    lora_alpha: int = _f(32, "run")
    lora_dropout: float = _f(0.0, "run", unit=True)
    lora_modules: tuple[str, ...] = _f(LINEARS, "run")
    gradient_checkpointing: bool = _f(False, "run")  # recompute each layer in the backward pass
    # preparing the tiny pair (cached): teacher from scratch, student warmed up
    teacher_steps: int = _f(150, "teacher-clean")  # SFT on clean traces
    # then SFT with perturbed-prefix (recovery) examples mixed in
    teacher_recovery_steps: int = _f(0, "teacher")
    teacher_perturb: float = _f(0.5, "teacher", unit=True)  # share of perturbed examples
    student_from_teacher: bool = _f(False, "student")  # start from the finished teacher
    # step error rate of the warm-up traces (a sloppy student)
    student_noise: float = _f(0.0, "student", unit=True)
    student_init_steps: int = _f(60, "student")
    student_init_max_len: int = _f(3, "student")  # warm-up chains up to this length
    student_init_task_frac: float = _f(0.5, "student", unit=True)  # rest: retention
    # share of warm-up chains shown with the hint (for OPSD)
    student_init_hint_frac: float = _f(0.0, "student", unit=True)
    # share of those hinted chains whose target has one step broken and recovered (the hint then
    # also teaches recovery)
    student_init_hint_perturb: float = _f(0.0, "student", unit=True)
    init_lr: float = _f(3e-3, "shared")
    init_batch_size: int = _f(32, "shared")
    # share of teacher/warm-up steps whose longest chain grows
    init_curriculum: float = _f(0.0, "shared", unit=True)
    # teacher/warm-up lr: warm-up then cosine decay (else constant)
    init_cosine: bool = _f(False, "shared")
    init_warmup: int = _f(20, "shared")  # teacher/warm-up lr warm-up steps
    # optimisation
    lr: float = _f(1e-3, "run", flag=True)
    weight_decay: float = _f(0.0, "run")
    grad_clip: float = _f(1.0, "run")  # 0: off
    optimizer: str = _f("adamw", "run", choices=("adamw", "sgd"))
    batch_size: int = _f(16, "run", positive=True, flag=True)  # prompts per optimizer step
    # prompts per forward/backward (gradient accumulation)
    micro_batch_size: int = _f(16, "run", positive=True, flag=True)
    # sampling
    max_new_tokens: int = _f(0, "run")  # 0: enough for the longest training trace (GSM8K: 512)
    max_prompt_tokens: int = _f(0, "run")  # longer prompts are refused (0: unchecked)
    temperature: float = _f(1.0, "run")
    # execution noise (opd_lib.lab.noise): the digit written after "=" is replaced by a wrong one
    # with this probability, by the environment, in the student's training samples / in evaluation
    rollout_noise: float = _f(0.0, "run", unit=True, flag=True)
    eval_noise: float = _f(0.0, "run", unit=True, flag=True)
    # share of the data's training traces with one step broken and recovered after (DART-style
    # off-policy data that covers post-slip states; the broken prefix is context, not target)
    data_perturb: float = _f(0.0, "run", unit=True, flag=True, methods=("sft", "kd", "gkd"))
    # prompts sampled and scored at once in evaluation (memory, not the evaluation set, sets it)
    eval_micro_batch_size: int = _f(64, "run", positive=True, resumable=True)
    # method knobs
    # sft/kd/gkd fixed sequences: "data" or "teacher" samples
    source: str = _f(
        "data", "run", choices=("data", "teacher"), flag=True, methods=("sft", "kd", "gkd")
    )
    lam: float = _f(
        0.5, "run", unit=True, flag=True, methods=("gkd",)
    )  # gkd: probability of on-policy sequences
    lam_schedule: str = _f(
        "fixed", "run", choices=("fixed", "industrial"), flag=True, methods=("gkd",)
    )
    # gkd (and opsd's jsd): JSD interpolation (0 forward KL, 1 reverse KL)
    beta: float = _f(0.5, "run", unit=True, flag=True, methods=("gkd", "opsd"))
    opd_estimator: str = _f("full", "run", choices=("full", "sampled"), flag=True, methods=("opd",))
    group_size: int = _f(4, "run", flag=True, methods=("rl",))  # rl
    # rl: weight of a KL anchor to the initial student, DeepSeekMath's k3 estimate per sampled
    # token (0: none)
    rl_kl: float = _f(0.0, "run", flag=True, methods=("rl",))
    opsd_teacher: str = _f(
        "live", "run", choices=("live", "frozen", "ema"), flag=True, methods=("opsd",)
    )
    ema_decay: float = _f(0.99, "run", unit=True, methods=("opsd",))
    clip: str = _f(
        "none", "run", choices=("none", "token", "pointwise"), flag=True, methods=("opsd",)
    )
    clip_value: float = _f(0.05, "run", methods=("opsd",))
    opsd_kind: str = _f("fkl", "run", choices=("fkl", "rkl", "jsd", "tv"), methods=("opsd",))
    # how kd/gkd/opd/opsd divergences (and evaluation's KL to the teacher) are computed: "on"
    # fuses each with the LM heads (opd_lib.fused_divergence; no [B, C, V] logits), "off" builds
    # the logits, "auto" fuses from FUSED_AUTO_VOCAB symbols on; the same numbers to ~1e-6
    fused_divergence: str = _f("auto", "run", choices=("auto", "on", "off"), resumable=True,
                               flag=True)  # fmt: skip
    # bookkeeping
    eval_every: int = _f(10, "run", positive=True, resumable=True)
    checkpoint_every: int = _f(10, "run", positive=True, resumable=True)
    progress: bool = _f(True, "run", resumable=True)
    # torch CPU threads (0: leave torch's default; 1 is fastest on a busy CPU)
    threads: int = _f(0, "run", resumable=True, flag=True)
    # where prepared tiny pairs are cached (default: the run dir)
    cache_dir: str | None = _f(None, "run", resumable=True, flag=True)
    # a run dir whose final student replaces the teacher
    teacher_from: str | None = _f(None, "run")
    # skip the teacher/student preflight checks before the first step (warns)
    skip_preflight: bool = _f(False, "run", resumable=True, flag=True)
    # the card's usable memory in GiB: the preflight refuses a run estimated above it (0: unchecked)
    memory_budget_gib: float = _f(0.0, "run", resumable=True)
    memory_overhead_gib: float = _f(0.75, "run", resumable=True)  # CUDA context, allocator slack

    def __post_init__(self) -> None:
        self.eval_lengths = tuple(int(x) for x in self.eval_lengths)
        self.lora_modules = tuple(str(x) for x in self.lora_modules)
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if "choices" in meta and value not in meta["choices"]:
                if f.name == "method":
                    raise ValueError(f"unknown method {value!r}; expected one of {METHODS}")
                raise ValueError(f"{f.name} must be one of {meta['choices']}, got {value!r}")
            if meta.get("unit") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be in [0, 1], got {value}")
            if meta.get("positive") and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{f.name} must be a positive int, got {value!r}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        if self.rl_kl < 0 or not math.isfinite(self.rl_kl):
            raise ValueError(f"rl_kl must be a finite number >= 0, got {self.rl_kl}")
        if self.data_perturb and self.task != "sum":
            raise ValueError("data_perturb breaks running-sum steps: it needs task='sum'")
        if self.method == "rl" and self.group_size < 2:
            raise ValueError(f"rl needs group_size >= 2, got {self.group_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if min(self.temperature, self.eval_temperature, self.grad_clip) < 0 or self.clip_value <= 0:
            raise ValueError(
                "temperature, eval_temperature and grad_clip must be >= 0 and clip_value > 0"
            )
        for name in ("max_new_tokens", "max_prompt_tokens", "lora_rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off/auto), got {getattr(self, name)}")
        if self.lora_rank and (self.lora_alpha <= 0 or not self.lora_modules):
            raise ValueError("LoRA needs lora_alpha > 0 and at least one module in lora_modules")
        if self.memory_budget_gib < 0 or self.memory_overhead_gib < 0:
            raise ValueError("memory_budget_gib and memory_overhead_gib must be >= 0")
        amp = self.precision in ("bf16-amp", "fp16-amp")
        if amp and self.lora_rank == 0 and self.dtype != "float32":
            raise ValueError(
                f"precision={self.precision!r} keeps float32 master weights: load the student "
                f"with dtype='float32' (got {self.dtype!r}) or train LoRA adapters"
            )
        if self.task == "sum":
            RunningSum(self.min_len, self.max_len, style=self.trace_style)  # validates lengths
            if any(k < 2 for k in self.eval_lengths) or not self.eval_lengths:
                raise ValueError(f"eval_lengths must be >= 2, got {self.eval_lengths}")
        if self.model == "tiny" and self.task != "sum":
            raise ValueError("the tiny models only know the character tokenizer's 'sum' task")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}")
        return cls(**d)


def check_resumable(config: Config, saved: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the fields (other than ``resumable`` ones) whose value in the
    ``saved`` config dict (a checkpoint's) differs from ``config``: another run's checkpoint."""
    mine, default = config.to_dict(), Config().to_dict()
    free = {f.name for f in dataclasses.fields(config) if f.metadata.get("resumable")}
    # a field the checkpoint predates counts as its default
    saved = {k: _as_saved(saved.get(k, default[k])) for k in mine}
    diff = sorted(k for k in mine if k not in free and saved[k] != _as_saved(mine[k]))
    if diff:
        raise ValueError(
            f"the checkpoint was written with a different config ({diff}); use another "
            "output directory or the same settings"
        )


def _as_saved(value: Any) -> Any:
    """``value`` as a checkpoint's JSON gives it back (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def refuse_foreign_checkpoint(config: Config, out_dir: Path) -> None:
    """Raise ``ValueError`` if ``out_dir/ckpt.pt`` belongs to a run with other settings (only
    ``resumable`` fields such as ``steps`` may differ); reads only, writes nothing."""
    from opd_lib.lab.checkpoint import load_checkpoint  # torch: imported only when needed

    if (Path(out_dir) / "ckpt.pt").is_file():
        check_resumable(config, load_checkpoint(Path(out_dir) / "ckpt.pt")["config"])


def stage_fields(stage: str) -> tuple[str, ...]:
    """Names of the fields tagged with pair-preparation ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata.get("stage") == stage)


def flag_fields() -> dict[str, type]:
    """Field name -> type of the fields the CLI offers as ``--flags``."""
    types = {int: int, float: float, str: str, bool: bool}
    default = Config()
    out = {}
    for f in dataclasses.fields(Config):
        if f.metadata.get("flag"):
            value = getattr(default, f.name)
            out[f.name] = str if value is None else types[type(value)]
    return out


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of field ``name``."""
    return {f.name: f.metadata.get("choices") for f in dataclasses.fields(Config)}[name]


def method_knobs(method: str) -> dict[str, tuple | Any]:
    """The fields that ``method``'s loss or rollout reads, with their allowed values (``choices``)
    or else their default: e.g. ``method_knobs("opd") == {"opd_estimator": ("full", "sampled")}``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    default = Config()
    return {
        f.name: f.metadata.get("choices", getattr(default, f.name))
        for f in dataclasses.fields(Config)
        if method in f.metadata.get("methods", ())
    }
