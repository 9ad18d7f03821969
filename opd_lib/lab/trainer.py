"""One training loop for every method in the book, CleanRL style: the hyperparameters in one
dataclass, the loop readable top to bottom.

Methods (``Config.method``):

* ``sft``  - cross-entropy on fixed sequences: the data's traces (``source="data"``) or the
  teacher's samples (``source="teacher"``, sequence-level KD).
* ``kd``   - token-level forward KL ``KL(teacher || student)`` on fixed (teacher) sequences.
* ``gkd``  - GKD: with probability ``lam`` the student's own samples, else fixed sequences;
  generalized JSD with ``beta`` (``lam_schedule="industrial"``: warm-up 0 -> mixed -> 1).
* ``opd``  - on-policy reverse KL ``KL(student || teacher)`` on the student's samples; either the
  exact full-vocabulary divergence (``opd_estimator="full"``) or the sampled-token estimator: the
  per-token reward ``log p_T - log p_S`` of the sampled token, through REINFORCE (``"sampled"``).
* ``rl``   - GRPO: ``group_size`` samples per prompt, the task's verifier as reward,
  group-normalised advantages, one on-policy update (so the PPO ratio is 1).
* ``opsd`` - on-policy self-distillation: the teacher is the student itself shown a hint
  (``opsd_teacher``: ``live`` weights, ``frozen`` initial weights or an ``ema`` copy), with no,
  per-token or point-wise clipping (``clip``).

Every step: draw prompts -> build the sequences to train on (a *rollout*; sampling happens here,
without gradients, for the whole batch) -> split into micro-batches -> accumulate gradients of
``sum of per-token losses / total counted tokens of the whole batch`` -> clip -> AdamW step.
Normalising by the batch's total token count (not each micro-batch's mean) makes gradient
accumulation give exactly the gradient of one large batch.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from opd_lib.divergences import token_divergence
from opd_lib.gkd import choose_source, completion_logits, lambda_schedule
from opd_lib.lab.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from opd_lib.lab.metrics import JsonlLogger, flops, n_params
from opd_lib.lab.tasks import (
    ALPHABET,
    Example,
    Reverse,
    RunningSum,
    get_task,
    make_examples,
    render_prompt,
)
from opd_lib.opsd import clip_per_token, clip_pointwise, gather_positions, hinted_teacher_inputs
from opd_lib.pg import per_token_reverse_kl_reward
from opd_lib.rl import group_advantages
from opd_lib.sampling import completion_mask, sample_completions

__all__ = [
    "METHODS",
    "Batch",
    "Config",
    "Rollout",
    "Trainer",
    "encode",
    "prepare_pair",
    "teacher_from_run",
    "train",
    "train_supervised",
]

METHODS = ("sft", "kd", "gkd", "opd", "rl", "opsd")
_CHOICES = {
    "source": ("data", "teacher"),
    "lam_schedule": ("fixed", "industrial"),
    "opd_estimator": ("full", "sampled"),
    "opsd_teacher": ("live", "frozen", "ema"),
    "clip": ("none", "token", "pointwise"),
    "opsd_kind": ("fkl", "rkl", "jsd", "tv"),
    "optimizer": ("adamw", "sgd"),
    "model": ("tiny", "hub"),
    "task": ("sum", "gsm8k"),
    "hint": ("answer", "trace"),
    "trace_style": ("plain", "tagged"),
}


@dataclass
class Config:
    """Every hyperparameter of a lab run (see ``presets.py`` for named sets)."""

    method: str = "opd"
    seed: int = 0
    steps: int = 20
    # task
    task: str = "sum"  # "sum" (running sum mod 10) or "gsm8k" (hub)
    min_len: int = 2  # chain lengths trained on
    max_len: int = 6
    eval_lengths: tuple[int, ...] = (2, 4, 6)
    eval_size: int = 16  # eval prompts per chain length
    eval_temperature: float = 0.0  # 0: greedy evaluation; 1: the policy's own samples
    retention: bool = True  # evaluate the retention task (reverse a string)
    retention_min_len: int = 3  # lengths of the strings to reverse
    retention_max_len: int = 6
    hint: str = "trace"  # what the OPSD hint reveals: "answer" or the whole "trace"
    trace_style: str = "plain"  # running-sum format: "plain" (sum 3452) or "tagged" (sum a3b4c5d2)
    # models
    model: str = "tiny"  # "tiny" (from scratch, offline) or "hub" (Qwen3 from the hub)
    teacher_layers: int = 2
    teacher_hidden: int = 64
    teacher_heads: int = 4
    student_layers: int = 1
    student_hidden: int = 32
    student_heads: int = 4
    model_seed: int = 0
    teacher_name: str = "Qwen/Qwen3-1.7B"
    student_name: str = "Qwen/Qwen3-0.6B"
    dtype: str = "float32"
    device: str = "cpu"
    # preparing the tiny pair (cached): teacher from scratch, student warmed up
    teacher_steps: int = 150  # SFT on clean traces
    teacher_recovery_steps: int = 0  # then SFT with perturbed-prefix (recovery) examples mixed in
    teacher_perturb: float = 0.5  # share of perturbed examples during the recovery steps
    student_from_teacher: bool = False  # the student starts from the finished teacher
    student_noise: float = 0.0  # step error rate of the warm-up traces (a sloppy student)
    student_init_steps: int = 60
    student_init_max_len: int = 3  # the student's warm-up sees chains up to this length
    student_init_task_frac: float = 0.5  # rest: the retention task
    student_init_hint_frac: float = 0.0  # share of warm-up chains shown with the hint (for OPSD)
    init_lr: float = 3e-3
    init_batch_size: int = 32
    init_curriculum: float = 0.0  # share of teacher/warm-up steps whose longest chain grows
    init_cosine: bool = False  # teacher/warm-up lr: warm-up then cosine decay (else constant)
    init_warmup: int = 20  # teacher/warm-up lr warm-up steps
    # optimisation
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0: off
    optimizer: str = "adamw"
    batch_size: int = 16  # prompts per optimizer step
    micro_batch_size: int = 16  # prompts per forward/backward (gradient accumulation)
    # sampling
    max_new_tokens: int = 0  # 0: enough for the longest training trace
    temperature: float = 1.0
    # method knobs
    source: str = "data"  # sft/kd/gkd fixed sequences: "data" or "teacher" samples
    lam: float = 0.5  # gkd: probability of on-policy sequences
    lam_schedule: str = "fixed"
    beta: float = 0.5  # gkd: JSD interpolation (0 forward KL, 1 reverse KL)
    opd_estimator: str = "full"
    group_size: int = 4  # rl
    opsd_teacher: str = "live"
    ema_decay: float = 0.99
    clip: str = "none"
    clip_value: float = 0.05
    opsd_kind: str = "fkl"
    # bookkeeping
    eval_every: int = 10
    checkpoint_every: int = 10
    progress: bool = True
    threads: int = 0  # torch CPU threads (0: leave torch's default; 1 is fastest on a busy CPU)
    cache_dir: str | None = None  # where prepared tiny pairs are cached (default: the run dir)
    teacher_from: str | None = None  # a run dir whose final student replaces the teacher

    def __post_init__(self) -> None:
        self.eval_lengths = tuple(int(x) for x in self.eval_lengths)
        self.validate()

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        names = ("lam", "beta", "teacher_perturb", "init_curriculum", "student_init_task_frac")
        names += ("student_init_hint_frac", "student_noise")
        for name in names + ("ema_decay",):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        positive = ("steps", "batch_size", "micro_batch_size", "eval_size", "eval_every")
        for name in positive + ("checkpoint_every",):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        if self.method == "rl" and self.group_size < 2:
            raise ValueError(f"rl needs group_size >= 2, got {self.group_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if min(self.temperature, self.eval_temperature, self.grad_clip) < 0 or self.clip_value <= 0:
            raise ValueError(
                "temperature, eval_temperature and grad_clip must be >= 0 and clip_value > 0"
            )
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0 (0 = auto), got {self.max_new_tokens}")
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


# ------------------------------------------------------------------------------- data -> tensors


@dataclass
class Batch:
    """Prompts (left padded) and completions (right padded; ``mask`` = tokens that count)."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    mask: torch.Tensor


def encode(tokenizer, examples: list[Example], device: str | torch.device = "cpu") -> Batch:
    """Chat-rendered prompts and reference completions (EOS appended) as tensors.

    A completion's ``prefix`` (a perturbed trace's broken part) is fed but not counted in ``mask``.
    """
    prompts = [render_prompt(tokenizer, ex.prompt) for ex in examples]
    enc = tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    rows, counted = [], []
    for ex in examples:
        pre = tokenizer(ex.prefix, add_special_tokens=False)["input_ids"] if ex.prefix else []
        rest = tokenizer(ex.target, add_special_tokens=False)["input_ids"]
        rows.append(pre + rest + [tokenizer.eos_token_id])
        counted.append(len(pre))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, skip) in enumerate(zip(rows, counted, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, skip : len(r)] = True
    return Batch(
        enc["input_ids"].to(device),
        enc["attention_mask"].to(device),
        ids.to(device),
        mask.to(device),
    )


@dataclass
class Rollout:
    """The sequences one optimizer step trains on, plus what its objective needs."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    mask: torch.Tensor  # [B, C] bool: tokens in the loss
    source: str  # "data", "teacher" or "student"
    advantages: torch.Tensor | None = None  # rl: [B]
    teacher_ids: torch.Tensor | None = None  # opsd: hinted inputs
    teacher_attn: torch.Tensor | None = None
    teacher_pos: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def rows(self, sl: slice) -> Rollout:
        def cut(t):
            return None if t is None else t[sl]

        return Rollout(
            self.prompt_ids[sl],
            self.prompt_mask[sl],
            self.completion_ids[sl],
            self.mask[sl],
            self.source,
            cut(self.advantages),
            cut(self.teacher_ids),
            cut(self.teacher_attn),
            cut(self.teacher_pos),
        )


def _logits_at(model, ids, attn):
    position_ids = (attn.long().cumsum(-1) - 1).clamp_min(0)
    return model(input_ids=ids, attention_mask=attn, position_ids=position_ids).logits


def _token_logp(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.detach().float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ------------------------------------------------------------------------------- the pair


def _tiny_tokenizer():
    from opd_lib.lab.tokenizers import char_tokenizer

    return char_tokenizer(ALPHABET)


def build_pair(config: Config):
    """Fresh (untrained) tiny pair, or the hub pair."""
    from opd_lib.lab.models import load_qwen3_pair, tiny_qwen3_pair

    if config.model == "hub":
        return load_qwen3_pair(
            config.teacher_name,
            config.student_name,
            dtype=getattr(torch, config.dtype),
            device=config.device,
        )
    return tiny_qwen3_pair(
        _tiny_tokenizer(),
        teacher=dict(
            layers=config.teacher_layers, hidden=config.teacher_hidden, heads=config.teacher_heads
        ),
        student=dict(
            layers=config.student_layers, hidden=config.student_hidden, heads=config.student_heads
        ),
        seed=config.model_seed,
        device=config.device,
    )


def train_supervised(
    model: torch.nn.Module,
    tokenizer,
    sample: Callable[[random.Random, float], Example],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = False,
    desc: str = "sft",
    warmup: int = 20,
    cosine: bool = False,
) -> list[float]:
    """Plain SFT: ``steps`` AdamW steps on ``batch_size`` examples from ``sample(rng, done)``
    (``done`` in [0, 1) is the share of training already done, for curricula); returns the
    losses. Used to train the tiny teacher (seconds on CPU) and to warm up the student. The
    learning rate rises linearly over ``warmup`` steps, then stays (or, with ``cosine``, decays to
    a tenth of ``lr`` by the last step). Touches no global RNG (its own ``random.Random(seed)``)."""
    rng = random.Random(seed)
    model.requires_grad_(True).train()
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def lr_factor(s: int) -> float:
        decay = 0.1 + 0.45 * (1 + math.cos(math.pi * s / steps)) if cosine else 1.0
        return min(1.0, (s + 1) / max(1, warmup)) * decay

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    losses = []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        b = encode(tokenizer, [sample(rng, step / steps) for _ in range(batch_size)], device)
        logits = completion_logits(model, b.prompt_ids, b.prompt_mask, b.completion_ids)
        loss = -_token_logp(logits, b.completion_ids)[b.mask].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.zero_grad(set_to_none=True)
    return losses


def growing_lengths(task: RunningSum, grow: float) -> Callable[[random.Random, float], Example]:
    """``task.sample`` with a length curriculum: while ``done < grow`` the longest chain rises
    linearly from ``min_len + 1`` to ``max_len``; afterwards the task's full range."""
    lo, span = task.min_len, task.max_len - task.min_len

    def sample(rng: random.Random, done: float) -> Example:
        if done >= grow or span < 2:
            return task.sample(rng)
        return task.sample(rng, rng.randint(lo, lo + max(1, int(done / grow * span))))

    return sample


_SHARED_KEYS = (
    "model_seed min_len max_len init_curriculum init_cosine init_warmup init_lr init_batch_size "
    "hint trace_style"
).split()
_STAGE_KEYS = {
    "teacher-clean": "teacher_layers teacher_hidden teacher_heads teacher_steps".split(),
    "teacher": "teacher_recovery_steps teacher_perturb".split(),
    "student": "student_layers student_hidden student_heads student_from_teacher student_noise "
    "student_init_steps student_init_max_len student_init_task_frac student_init_hint_frac "
    "retention_min_len retention_max_len".split(),
}


def cache_key(config: Config, stage: str) -> str:
    """Hash of the settings that determine a prepared model: ``stage`` is ``"teacher-clean"``
    (after stage 1), ``"teacher"`` or ``"student"``; its cache file is ``<stage>-<hash>.pt``."""
    keys = _SHARED_KEYS + _STAGE_KEYS[stage]
    if stage == "teacher" or (stage == "student" and config.student_from_teacher):
        keys = keys + _STAGE_KEYS["teacher-clean"]
    if stage == "student" and config.student_from_teacher:
        keys = keys + _STAGE_KEYS["teacher"]
    blob = json.dumps({k: getattr(config, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def prepare_pair(config: Config, cache_dir: str | Path | None = None):
    """The pair a run starts from.

    Hub: the pretrained Qwen3 pair as loaded. Tiny, in three SFT stages (each with warm-up, and
    cosine decay if ``init_cosine``), each cached in ``cache_dir/<stage>-<hash>.pt`` so every
    method and seed starts from the same pair and a change to one stage retrains only what
    depends on it:

    1. ``teacher-clean``: the teacher learns clean traces from scratch (``teacher_steps``; the
       longest chain grows over the first ``init_curriculum`` share of them);
    2. ``teacher``: it learns to recover (``teacher_recovery_steps`` at a third of the learning
       rate, a ``teacher_perturb`` share of perturbed traces whose broken prefix is context);
    3. ``student``: from scratch, or from the finished teacher (``student_from_teacher``), the
       student warms up for ``student_init_steps`` on chains up to ``student_init_max_len``
       written with a ``student_noise`` step error rate (``RunningSum.sloppy``), or, for a
       ``student_init_hint_frac`` share, clean traces with the hint (the same trace) in the
       prompt, so that its hinted self can teach in OPSD; mixed with the retention task (the
       rest of ``student_init_task_frac``).
    """
    pair = build_pair(config)
    if config.model == "hub":
        return pair
    c = config
    if c.student_from_teacher and (
        (c.student_layers, c.student_hidden, c.student_heads)
        != (c.teacher_layers, c.teacher_hidden, c.teacher_heads)
    ):
        raise ValueError("student_from_teacher needs the student and teacher sizes to be equal")
    task = RunningSum(c.min_len, c.max_len, hint=c.hint, style=c.trace_style)
    warm_max = max(2, min(c.student_init_max_len, c.max_len))
    warm = RunningSum(2, warm_max, hint=c.hint, style=c.trace_style)
    clean = growing_lengths(task, c.init_curriculum)
    warm_chain = growing_lengths(warm, c.init_curriculum)
    retention = Reverse(c.retention_min_len, c.retention_max_len)

    def recovery_sample(rng: random.Random, done: float) -> Example:
        ex = task.sample(rng)
        return task.perturbed(ex, rng) if rng.random() < c.teacher_perturb else ex

    def student_sample(rng: random.Random, done: float) -> Example:
        if rng.random() >= c.student_init_task_frac:
            return retention.sample(rng)
        ex = warm_chain(rng, done)
        if rng.random() < c.student_init_hint_frac:  # the hint shows the clean trace: copy it
            return dataclasses.replace(ex, prompt=ex.hinted_prompt())
        return warm.sloppy(ex, rng, c.student_noise)

    def stage(name, model, start, sample, steps, lr, seed_offset) -> dict:
        """Load ``model`` from the stage's cache file, or train it from ``start`` and save it;
        returns a copy of its weights."""
        path = Path(cache_dir) / f"{name}-{cache_key(c, name)}.pt" if cache_dir else None
        if path is not None and path.is_file():
            model.load_state_dict(load_checkpoint(path)["model"])
            return copy.deepcopy(model.state_dict())
        if start is not None:
            model.load_state_dict(start)
        if steps:
            train_supervised(
                model, pair.tokenizer, sample, steps=steps, batch_size=c.init_batch_size,
                lr=lr, seed=c.model_seed + seed_offset, progress=c.progress, desc=name,
                warmup=c.init_warmup, cosine=c.init_cosine,
            )  # fmt: skip
        state = copy.deepcopy(model.state_dict())
        if path is not None:
            save_checkpoint(path, {"model": state})
        return state

    first = stage("teacher-clean", pair.teacher, None, clean, c.teacher_steps, c.init_lr, 100)
    teacher = stage("teacher", pair.teacher, first, recovery_sample, c.teacher_recovery_steps,
                    c.init_lr / 3, 200)  # fmt: skip
    student_start = teacher if c.student_from_teacher else None
    stage("student", pair.student, student_start, student_sample, c.student_init_steps,
          c.init_lr, 300)  # fmt: skip
    return pair


# ------------------------------------------------------------------------------- the trainer

_AUX_EVALS = ("retention", "hinted")  # evaluation sets outside the main task's mean accuracy


def teacher_from_run(pair, run_dir: str | Path):
    """``pair`` with its teacher replaced by the final student of the run in ``run_dir``
    (``student.pt``): for distilling from a student that another method changed (seed 003's
    OPD from a degraded SFT teacher)."""
    path = Path(run_dir) / "student.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: finish the run in {run_dir} first")
    teacher = copy.deepcopy(pair.student).requires_grad_(False)
    teacher.load_state_dict(load_checkpoint(path)["student"])
    return dataclasses.replace(pair, teacher=teacher)


class Trainer:
    """One run: ``Trainer(config, pair, out_dir).run()``. With ``out_dir``, metrics go to
    ``out_dir/metrics.jsonl`` and checkpoints to ``out_dir/ckpt.pt``, and an existing checkpoint
    is resumed from."""

    def __init__(self, config: Config, pair, out_dir: str | Path | None = None) -> None:
        config.validate()
        self.config = c = config
        self.pair = pair
        self.tok = pair.tokenizer
        self.student, self.teacher = pair.student, pair.teacher
        self.device = pair.device
        self.teacher.requires_grad_(False)
        self.student.requires_grad_(True)
        self.student.zero_grad(set_to_none=True)  # no stale gradients from earlier training
        # tasks and a fixed evaluation set (same for every seed and method)
        if c.task == "sum":
            self.task = RunningSum(c.min_len, c.max_len, hint=c.hint, style=c.trace_style)
            self.eval_sets = {
                f"len{k}": make_examples(self.task, c.eval_size, 10_000 + k, length=k)
                for k in c.eval_lengths
            }
        else:
            self.task = get_task("gsm8k", split="train")
            self.eval_sets = {"all": get_task("gsm8k", split="test", limit=c.eval_size).examples}
        self.retention = Reverse(c.retention_min_len, c.retention_max_len) if c.retention else None
        if self.retention is not None:
            self.eval_sets["retention"] = make_examples(self.retention, c.eval_size, 20_000)
        # states off the reference distribution: a trace with one step forced wrong; does the
        # policy find its way back to the right answer? (the DAgger mechanism, measured directly)
        self.recovery_set: list[Example] = []
        if c.task == "sum" and max(c.eval_lengths) >= 3:
            rng = random.Random(30_000)
            longest = make_examples(self.task, c.eval_size, 30_000, length=max(c.eval_lengths))
            self.recovery_set = [self.task.perturbed(ex, rng) for ex in longest]
        if c.method == "opsd":  # does the self-teacher still read the hint?
            self.eval_sets["hinted"] = [
                dataclasses.replace(ex, prompt=ex.hinted_prompt())
                for name in list(self.eval_sets)
                if name not in _AUX_EVALS
                for ex in self.eval_sets[name]
            ]
        self.max_new_tokens = c.max_new_tokens or self._auto_max_new_tokens()
        # optimizer and randomness
        params = [p for p in self.student.parameters() if p.requires_grad]
        if c.optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            self.opt = torch.optim.SGD(params, lr=c.lr)
        self.data_rng = random.Random(c.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(c.seed)
        torch.manual_seed(c.seed)
        # OPSD's frozen / EMA self-teacher
        self.self_teacher = None
        if c.method == "opsd" and c.opsd_teacher != "live":
            self.self_teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.n_student, self.n_teacher = n_params(self.student), n_params(self.teacher)
        self.step = 0
        self.totals = {"flops": 0.0, "trained_tokens": 0, "wall_s": 0.0}
        self.out = Path(out_dir) if out_dir is not None else None
        self.logger = JsonlLogger(self.out / "metrics.jsonl") if self.out else None
        self.resumed = self._maybe_resume()

    # -------------------------------------------------------------- helpers

    def _auto_max_new_tokens(self) -> int:
        if self.config.task != "sum":
            return 256
        longest = self.task.sample(random.Random(0), self.config.max_len)
        return len(self.tok(longest.completion, add_special_tokens=False)["input_ids"]) + 3

    def _sample(self, model, prompt_ids, prompt_mask, temperature: float | None = None, gen=None):
        return sample_completions(
            model,
            prompt_ids,
            prompt_mask,
            self.max_new_tokens,
            temperature=self.config.temperature if temperature is None else temperature,
            generator=self.gen if gen is None else gen,
            eos_token_id=self.tok.eos_token_id,
            pad_token_id=self.tok.pad_token_id,
        )

    def _decode(self, ids: torch.Tensor) -> list[str]:
        return self.tok.batch_decode(ids, skip_special_tokens=True)

    def lam_now(self) -> float:
        c = self.config
        return lambda_schedule(self.step, c.steps) if c.lam_schedule == "industrial" else c.lam

    # -------------------------------------------------------------- 1. rollout

    @torch.no_grad()
    def rollout(self, examples: list[Example]) -> Rollout:
        """The sequences this step trains on (sampling for the whole batch happens here)."""
        c = self.config
        if c.method == "rl":
            examples = [ex for ex in examples for _ in range(c.group_size)]
        b = encode(self.tok, examples, self.device)
        source, stats = "student", {}
        if c.method in ("sft", "kd"):
            source = c.source
        elif c.method == "gkd":
            stats["lam"] = self.lam_now()
            source = choose_source(stats["lam"], c.source == "teacher", self.gen)
        if source == "data":
            completion, mask = b.completion_ids, b.mask
        else:
            model = self.teacher if source == "teacher" else self.student
            completion = self._sample(model, b.prompt_ids, b.prompt_mask)
            mask = completion_mask(completion, self.tok.eos_token_id)
            n_prompt = int(b.prompt_mask.sum())
            n = self.n_teacher if source == "teacher" else self.n_student
            stats["gen_flops"] = flops(0, 0, generated={n: int(mask.sum()) + n_prompt})
        roll = Rollout(b.prompt_ids, b.prompt_mask, completion, mask, source, stats=stats)
        if c.method == "rl":
            verdicts = [
                self.task.verify(ex, text)
                for ex, text in zip(examples, self._decode(completion), strict=True)
            ]
            rewards = torch.tensor([v.reward for v in verdicts], device=self.device)
            roll.advantages = group_advantages(rewards, c.group_size)
            stats["reward"] = rewards.mean().item()
        if c.method == "opsd":
            hinted = [render_prompt(self.tok, ex.hinted_prompt()) for ex in examples]
            ti = hinted_teacher_inputs(self.tok, hinted, [""] * len(hinted), completion.cpu())
            roll.teacher_ids = ti.input_ids.to(self.device)
            roll.teacher_attn = ti.attention_mask.to(self.device)
            roll.teacher_pos = ti.positions.to(self.device)
        return roll

    # -------------------------------------------------------------- 2. objective

    def loss_sum(self, r: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over the micro-batch's counted tokens of the method's per-token loss (the caller
        divides by the whole batch's token count), and statistics (sums, not means)."""
        c = self.config
        logits = completion_logits(self.student, r.prompt_ids, r.prompt_mask, r.completion_ids)
        mask = r.mask
        n_scored = int(r.prompt_mask.sum() + mask.sum())
        stats = {"entropy_sum": _entropy(logits)[mask].sum().item(), "teacher_flops": 0.0}

        def teacher_logits() -> torch.Tensor:
            stats["teacher_flops"] = flops(0, 0, scored={self.n_teacher: n_scored})
            with torch.no_grad():
                return completion_logits(
                    self.teacher, r.prompt_ids, r.prompt_mask, r.completion_ids
                )

        if c.method == "sft":
            per_token = -_token_logp(logits, r.completion_ids)
        elif c.method in ("kd", "gkd") or (c.method == "opd" and c.opd_estimator == "full"):
            kind, beta = {"kd": ("fkl", 0.0), "gkd": ("jsd", c.beta), "opd": ("rkl", 0.0)}[c.method]
            per_token = token_divergence(logits, teacher_logits(), kind, beta, mask=mask)
        elif c.method == "opd":  # sampled-token estimator through REINFORCE
            logp = _token_logp(logits, r.completion_ids)
            logp_t = _token_logp(teacher_logits(), r.completion_ids)
            reward = per_token_reverse_kl_reward(logp_t, logp)
            stats["divergence_sum"] = (-reward)[mask].sum().item()  # k1 estimate of reverse KL
            per_token = -reward * logp
        elif c.method == "rl":
            logp = _token_logp(logits, r.completion_ids)
            per_token = -r.advantages.unsqueeze(-1) * logp
        else:  # opsd
            model = self.student if self.self_teacher is None else self.self_teacher
            with torch.no_grad():
                t_all = _logits_at(model, r.teacher_ids, r.teacher_attn)
                t_logits = gather_positions(t_all, r.teacher_pos)
            stats["teacher_flops"] = flops(0, 0, scored={self.n_student: int(r.teacher_attn.sum())})
            if c.clip == "pointwise":
                per_token = clip_pointwise(
                    logits, t_logits, mask, c.opsd_kind, c.clip_value, beta=c.beta
                )
            else:
                per_token = token_divergence(logits, t_logits, c.opsd_kind, c.beta, mask=mask)
                stats["divergence_sum"] = per_token[mask].sum().item()
                if c.clip == "token":
                    per_token = clip_per_token(per_token, c.clip_value)
        if "divergence_sum" not in stats and c.method in ("kd", "gkd", "opd"):
            stats["divergence_sum"] = per_token.detach()[mask].sum().item()
        total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
        stats["train_flops"] = flops(self.n_student, n_scored)
        stats["trained_tokens"] = n_scored
        return total, stats

    # -------------------------------------------------------------- 3. one optimizer step

    def train_step(self) -> dict[str, Any]:
        c = self.config
        t0 = time.perf_counter()
        self.student.train()
        examples = [self.task.sample(self.data_rng) for _ in range(c.batch_size)]
        roll = self.rollout(examples)
        n_tokens = int(roll.mask.sum())  # the normaliser: ALL counted tokens of the batch
        rows = c.micro_batch_size * (c.group_size if c.method == "rl" else 1)
        loss, acc = 0.0, {}
        for start in range(0, roll.mask.shape[0], rows):
            part_loss, stats = self.loss_sum(roll.rows(slice(start, start + rows)))
            (part_loss / n_tokens).backward()
            loss += part_loss.item() / n_tokens
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + v
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), c.grad_clip).item()
            if c.grad_clip > 0
            else float("nan")
        )
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.self_teacher is not None and c.opsd_teacher == "ema":
            with torch.no_grad():
                for pt, ps in zip(
                    self.self_teacher.parameters(), self.student.parameters(), strict=True
                ):
                    pt.lerp_(ps, 1.0 - c.ema_decay)
        self.step += 1
        step_flops = acc["train_flops"] + acc["teacher_flops"] + roll.stats.get("gen_flops", 0.0)
        dt = time.perf_counter() - t0
        self.totals["flops"] += step_flops
        self.totals["trained_tokens"] += n_tokens
        self.totals["wall_s"] += dt
        record = {
            "type": "train",
            "step": self.step,
            "loss": loss,
            "tokens": n_tokens,
            "source": roll.source,
            "entropy": acc["entropy_sum"] / n_tokens,
            "grad_norm": grad_norm,
            "flops": self.totals["flops"],
            "tokens_per_s": acc["trained_tokens"] / dt,
            "time_s": dt,
            "wall_s": self.totals["wall_s"],
        }
        if "divergence_sum" in acc:
            record["divergence"] = acc["divergence_sum"] / n_tokens
        for key in ("lam", "reward"):
            if key in roll.stats:
                record[key] = roll.stats[key]
        return record

    # -------------------------------------------------------------- 4. evaluation

    @torch.no_grad()
    def evaluate(self, model=None, prefix: str = "") -> dict[str, Any]:
        """Accuracy per chain length (answer, whole trace, per-step error rate; greedy, or sampled
        at ``eval_temperature`` with a fixed seed), the accuracy after a forced wrong step
        (``acc_recovery``, at the longest evaluated length), greedy retention accuracy, for OPSD
        the accuracy with the hint in the prompt (``acc_hinted``), and the student's reverse/forward
        KL to the teacher and entropy on its own evaluation completions of the main task."""
        c = self.config
        model = self.student if model is None else model
        model.eval()
        out: dict[str, Any] = {}
        main_ids, main_batches = [], []
        gen = torch.Generator(device=self.device).manual_seed(0)
        for name, examples in self.eval_sets.items():
            task = self.retention if name == "retention" else self.task
            b = encode(self.tok, examples, self.device)
            temperature = 0.0 if name == "retention" else c.eval_temperature  # knowledge: greedy
            ids = self._sample(model, b.prompt_ids, b.prompt_mask, temperature, gen=gen)
            verdicts = [
                task.verify(ex, t) for ex, t in zip(examples, self._decode(ids), strict=True)
            ]
            out[f"{prefix}acc_{name}"] = sum(v.correct for v in verdicts) / len(verdicts)
            if name not in _AUX_EVALS:
                out[f"{prefix}trace_acc_{name}"] = sum(v.trace_ok for v in verdicts) / len(verdicts)
                steps = sum(v.n_steps for v in verdicts)
                out[f"{prefix}step_err_{name}"] = sum(v.n_bad_steps for v in verdicts) / steps
                main_ids.append(ids)
                main_batches.append(b)
        if self.recovery_set:
            out[f"{prefix}acc_recovery"] = self._recovery_accuracy(model, gen)
        names = [n for n in self.eval_sets if n not in _AUX_EVALS]
        out[f"{prefix}acc"] = sum(out[f"{prefix}acc_{n}"] for n in names) / len(names)
        if not prefix:  # distance to the teacher where the student goes
            tot = {"rkl": 0.0, "fkl": 0.0, "entropy": 0.0, "n": 0}
            for b, ids in zip(main_batches, main_ids, strict=True):
                mask = completion_mask(ids, self.tok.eos_token_id)
                s = completion_logits(self.student, b.prompt_ids, b.prompt_mask, ids)
                t = completion_logits(self.teacher, b.prompt_ids, b.prompt_mask, ids)
                for kind in ("rkl", "fkl"):
                    tot[kind] += token_divergence(s, t, kind, mask=mask, reduction="sum").item()
                tot["entropy"] += _entropy(s)[mask].sum().item()
                tot["n"] += int(mask.sum())
            out["rkl_to_teacher"] = tot["rkl"] / tot["n"]
            out["fkl_to_teacher"] = tot["fkl"] / tot["n"]
            out["eval_entropy"] = tot["entropy"] / tot["n"]
        self.student.train()
        return out

    def _recovery_accuracy(self, model, gen: torch.Generator) -> float:
        """Share of right answers when the trace so far (``Example.prefix``, ending in a wrong
        step) is forced and the policy writes the rest, at ``eval_temperature``."""
        prompts = [render_prompt(self.tok, ex.prompt) + ex.prefix for ex in self.recovery_set]
        enc = self.tok(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
        ids = self._sample(
            model,
            enc["input_ids"].to(self.device),
            enc["attention_mask"].to(self.device),
            self.config.eval_temperature,
            gen=gen,
        )
        texts = self._decode(ids)
        right = [
            self.task.verify(ex, ex.prefix + t).correct
            for ex, t in zip(self.recovery_set, texts, strict=True)
        ]
        return sum(right) / len(right)

    # -------------------------------------------------------------- 5. checkpoints

    @property
    def ckpt_path(self) -> Path | None:
        return self.out / "ckpt.pt" if self.out else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "student": self.student.state_dict(),
            "optimizer": self.opt.state_dict(),
            "self_teacher": None if self.self_teacher is None else self.self_teacher.state_dict(),
            "rng": rng_state({"sample": self.gen}, {"data": self.data_rng}),
            "totals": dict(self.totals),
            "metrics_offset": self.logger.offset if self.logger else 0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = dict(state["config"])
        mine = self.config.to_dict()
        ignore = {
            "steps",
            "progress",
            "threads",
            "eval_every",
            "checkpoint_every",
            "cache_dir",
            "device",
        }
        diff = sorted(k for k in mine if k not in ignore and saved.get(k) != mine[k])
        if diff:
            raise ValueError(
                f"the checkpoint was written with a different config ({diff}); use another "
                "output directory or the same settings"
            )
        self.student.load_state_dict(state["student"])
        self.opt.load_state_dict(state["optimizer"])
        if self.self_teacher is not None:
            self.self_teacher.load_state_dict(state["self_teacher"])
        set_rng_state(state["rng"], {"sample": self.gen}, {"data": self.data_rng})
        self.step = state["step"]
        self.totals = dict(state["totals"])
        if self.logger:
            self.logger.truncate(state["metrics_offset"])

    def save(self) -> None:
        if self.ckpt_path is not None:
            save_checkpoint(self.ckpt_path, self.state_dict())

    def _maybe_resume(self) -> bool:
        if self.ckpt_path is None or not self.ckpt_path.is_file():
            if self.logger:
                self.logger.truncate(0)  # a fresh run starts a fresh log
            return False
        self.load_state_dict(load_checkpoint(self.ckpt_path))
        return True

    # -------------------------------------------------------------- 6. the loop

    def log(self, record: dict[str, Any]) -> None:
        record = {"method": self.config.method, "seed": self.config.seed, **record}
        self.history.append(record)
        if self.logger:
            self.logger.log(record)

    def run(self) -> list[dict[str, Any]]:
        """Train to ``config.steps``; returns the records logged by this call."""
        c = self.config
        self.history: list[dict[str, Any]] = []
        if self.step == 0:
            self.log({"type": "teacher", "step": 0, **self.evaluate(self.teacher, "teacher_")})
            self.log({"type": "eval", "step": 0, "flops": 0.0, **self.evaluate()})
        bar = tqdm(
            range(self.step, c.steps), initial=self.step, total=c.steps, desc=c.method,
            disable=not c.progress,
        )  # fmt: skip
        for _ in bar:
            record = self.train_step()
            self.log(record)
            if self.step % c.eval_every == 0 or self.step == c.steps:
                ev = self.evaluate()
                self.log({"type": "eval", "step": self.step, "flops": self.totals["flops"], **ev})
                bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{ev['acc']:.2f}")
            if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                self.save()
        if self.out is not None:  # the final weights alone, e.g. to serve as a teacher later
            save_checkpoint(self.out / "student.pt", {"student": self.student.state_dict()})
        return self.history


def train(config: Config, out_dir: str | Path | None = None, pair=None) -> list[dict[str, Any]]:
    """Prepare the pair (cached under ``config.cache_dir`` or ``out_dir``), then run (resuming
    from ``out_dir/ckpt.pt`` if there is one). Returns the records logged by this call."""
    if pair is None:
        pair = prepare_pair(config, config.cache_dir or out_dir)
    if config.teacher_from:
        pair = teacher_from_run(pair, config.teacher_from)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    return Trainer(config, pair, out_dir).run()
