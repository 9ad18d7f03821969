"""What the lab's command line says: its help (descriptions of the methods, presets and settings,
each flag's default per preset), ``--list-keys``, and the summary printed at the end of a run."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

from opd_lib.lab.config import METHODS, Config
from opd_lib.lab.presets import ALIASES, PRESETS

__all__ = [
    "DESCRIPTION",
    "KEY_HELP",
    "METHOD_TEXT",
    "PRESET_TEXT",
    "TINY_NOTE",
    "default_text",
    "epilog",
    "list_keys",
    "show",
    "summary",
]

DESCRIPTION = """\
Train a student from a teacher with any method of the book, on the lab's running-sum task (tiny
Qwen3 models; a CPU is enough) or on GSM8K (Qwen/Qwen3-0.6B from Qwen/Qwen3-1.7B; a GPU).

first run (under a minute on a CPU; a teacher that solves the task, a student that learns):
  python -m opd_lib.lab train --method opd --preset full --steps 20 \\
      --cache-dir results/lab/full/cache --out runs/opd

'python -m opd_lib.lab COMMAND --help' describes a command and its options."""

METHOD_TEXT = {
    "sft": "cross-entropy on fixed traces: the data's or the teacher's samples (--source)",
    "kd": "forward KL(teacher || student) at every token of fixed traces (--source)",
    "gkd": "generalized JSD (--beta) on the student's own samples with probability --lam, "
    "else on fixed traces (--lam-schedule)",
    "opd": "on-policy distillation: reverse KL(student || teacher) on the student's own "
    "samples (--opd-estimator)",
    "rl": "GRPO: the task's 0/1 reward, advantages normalised in groups of --group-size",
    "opsd": "on-policy self-distillation: the student shown the hint teaches itself "
    "(--opsd-teacher, --clip)",
}
PRESET_TEXT = {
    "tiny": "seconds; a plumbing check (CI, the book's smoke run): its teacher trains for "
    "seconds and is not expected to be accurate",
    "full": "Chapter 10 on a CPU: a teacher that solves the running sum, a sloppy student; "
    "uses the committed pair in results/lab/full/cache when it holds this pair (else trains "
    "the pair: minutes)",
    "gpu": "full scaled up for one GPU: wider and deeper models, longer chains, more steps",
    "colab-t4": "Qwen/Qwen3-0.6B from Qwen/Qwen3-1.7B on GSM8K, 16 GB T4: fp16, LoRA rank 16, "
    "gradient checkpointing",
    "a100": "the same pair, 40 GB A100: full fine-tune, float32 master weights, bf16 autocast",
    "h100": "the same pair, 80 GB H100: as a100 with twice the micro-batch",
}
# help of the --flags, and of the --set keys a newcomer reaches for first
KEY_HELP = {
    "seed": "RNG seed of the run (sampling, data order)",
    "steps": "optimizer steps; a larger value extends a finished run",
    "device": "torch device: cpu, cuda, cuda:1, ...",
    "lr": "learning rate",
    "batch_size": "prompts per optimizer step",
    "micro_batch_size": "prompts per forward/backward (gradient accumulation); divides "
    "--batch-size",
    "rollout_noise": "execution noise: probability that a digit the student writes after '=' "
    "in its training samples is replaced by a wrong one",
    "eval_noise": "the same execution noise in evaluation",
    "data_perturb": "sft/kd/gkd on data: share of training traces with one step broken and "
    "recovered after (DART-style data that shows post-slip states)",
    "source": "sft/kd/gkd: fixed traces from the dataset (data) or the teacher's samples",
    "lam": "gkd: probability that a batch is the student's own samples",
    "lam_schedule": "gkd: a fixed --lam, or industrial (0, then mixed, then 1)",
    "beta": "gkd (and opsd_kind=jsd): JSD interpolation, 0 forward KL, 1 reverse KL",
    "opd_estimator": "opd: exact reverse KL over the vocabulary (full) or its one-sample "
    "estimate at the sampled token (sampled)",
    "group_size": "rl: samples per prompt (at least 2)",
    "rl_kl": "rl: weight of a KL anchor to the initial student (k3 estimate; 0: none)",
    "opsd_teacher": "opsd: the hinted self-teacher: live (the current weights; collapses in "
    "Chapter 10), frozen (the initial weights) or ema",
    "clip": "opsd: clip the divergence per token, per vocabulary entry (pointwise) or not",
    "fused_divergence": "divergences from hidden states and LM heads, without [B, C, V] "
    "logits (the same numbers); auto: on from a large vocabulary",
    "threads": "torch CPU threads (0: torch's default; 1 is fastest on a busy CPU)",
    "cache_dir": "directory of the prepared teacher/student pair, shared by the runs that "
    "name it (default: the run directory; full: results/lab/full/cache when it holds the pair)",
    "skip_preflight": "skip the teacher/student checks before the first step (warns)",
    "eval_temperature": "0: greedy evaluation; T > 0: the policy's own samples at T",
    "eval_size": "evaluation prompts per chain length",
    "eval_lengths": "chain lengths evaluated, comma-separated",
    "temperature": "sampling temperature of the training rollouts",
    "retention": "also evaluate the retention task (reverse a string): forgetting",
    "teacher_from": "a finished run directory whose final student (student.pt) is the teacher",
    "opsd_kind": "opsd: the divergence to the hinted self",
    "ema_decay": "opsd with an ema teacher: its decay per step",
    "clip_value": "opsd: the clip's cap",
    "max_new_tokens": "longest sampled completion (0: enough for the longest trace)",
    "precision": "fp32; bf16-amp/fp16-amp (float32 master weights, autocast); bf16",
    "lora_rank": "LoRA adapters of this rank on the student (0: full fine-tune)",
    "memory_budget_gib": "the card's usable GiB: a run estimated above it is refused (0: off)",
    "eval_every": "steps between evaluations",
    "checkpoint_every": "steps between checkpoints (OUT/ckpt.pt)",
}
TINY_NOTE = (
    "note: tiny is a plumbing check; its teacher trains for seconds and is not expected to be "
    "accurate. For real numbers: --preset full --cache-dir results/lab/full/cache"
)


def show(value: Any) -> str:
    """A setting as a user types it: ``none``, ``true``, ``2,4,6``, ``0.001``."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(name: str, method_defaults: dict[str, dict[str, Any]]) -> str:
    """Field ``name``'s default per preset (grouped by value) and any per-method CLI default
    from ``method_defaults``, e.g. ``"default 100 (full, colab-t4, a100, h100); 8 (tiny)"``."""
    base = Config()
    by_value: dict[str, list[str]] = {}
    for p, values in PRESETS.items():
        by_value.setdefault(show(values.get(name, getattr(base, name))), []).append(p)
    if len(by_value) == 1:
        text = f"default {next(iter(by_value))}"
    else:
        text = "default " + "; ".join(f"{v} ({', '.join(ps)})" for v, ps in by_value.items())
    for method, defaults in method_defaults.items():
        if name in defaults:
            text += f"; with --method {method}: {show(defaults[name])}"
    return text


def list_keys() -> str:
    """Every Config key with its type, library default, choices and help, for ``--set``."""
    lines = [
        "--set KEY=VALUE keys (the library's defaults; presets change many: --help lists them):"
    ]
    base = Config()
    for f in dataclasses.fields(Config):
        default = getattr(base, f.name)
        allowed = f.metadata.get("choices")
        extra = [f"one of {', '.join(allowed)}"] if allowed else []
        extra += [KEY_HELP[f.name]] if f.name in KEY_HELP else []
        kind = "str" if default is None else type(default).__name__
        lines.append(f"  {f.name:<26} {kind:<6} {show(default):<12} {'; '.join(extra)}")
    return "\n".join(lines)


def _item(name: str, text: str, width: int) -> str:
    """``  name  text`` wrapped at 100 columns, continuation lines under the text."""
    indent = " " * (width + 3)
    return textwrap.fill(f"  {name:<{width}} {text}", 100, subsequent_indent=indent)


def epilog(method_defaults: dict[str, dict[str, Any]] | None) -> str:
    """The methods (and ``method_defaults``, the CLI's per-method defaults), unless ``None``,
    then the presets and how to reach every other setting."""
    lines = []
    if method_defaults is not None:
        lines += ["methods:"] + [_item(m, METHOD_TEXT[m], 6) for m in METHODS]
        base = Config()
        kept = ", ".join(
            f"{k}={show(getattr(base, k))}" for d in method_defaults.values() for k in d
        )
        lines += [
            f"CLI defaults per method (Chapter 10's arms; the library's Config keeps {kept}):"
        ]
        lines += [
            _item(m, " ".join(f"--{k.replace('_', '-')} {show(v)}" for k, v in d.items()), 6)
            for m, d in method_defaults.items()
        ]
    aliases = ", ".join(f"{a} = {p}" for a, p in ALIASES.items())
    lines += [f"presets ({aliases}):"] + [_item(p, PRESET_TEXT[p], 9) for p in PRESETS]
    lines += [
        "other settings: --set KEY=VALUE ... (--list-keys lists every key), e.g.",
        "  --set eval_temperature=0 eval_size=96 teacher_from=runs/stress-sft",
    ]
    return "\n".join(lines)


def summary(config: Config, preset_name: str, out: str | Path) -> str:
    """The end of a run in a few lines: the teacher's accuracy, the student's at step 0 and at
    its last evaluation (greedy or sampled, as evaluated), the same for recovery after a forced
    wrong step where it was measured, and the files written."""
    from opd_lib.lab.metrics import read_jsonl

    out = Path(out)
    records = read_jsonl(out / "metrics.jsonl")
    teacher = next(r for r in records if r["type"] == "teacher")
    evals = [r for r in records if r["type"] == "eval"]
    first, last = evals[0], evals[-1]
    t = config.eval_temperature
    how = "greedy" if t == 0 else f"sampled at T={t:g}"
    if config.eval_noise:
        how += f", execution noise {config.eval_noise:g}"
    files = {
        "metrics.jsonl": "every step and evaluation",
        "student.pt": "final weights",
        "ckpt.pt": "resume point; a larger --steps extends the run",
        "config.json": "the settings",
    }
    lines = [
        f"{config.method}: step {last['step']} of {config.steps} in {out}",
        f"accuracy ({how}): teacher {teacher['teacher_acc']:.0%}; student "
        f"{first['acc']:.0%} at step 0 -> {last['acc']:.0%} at step {last['step']}",
    ]
    if "acc_recovery" in last:  # the DAgger mechanism, measured directly
        lines.append(
            f"right answer after a forced wrong step: teacher {teacher['teacher_acc_recovery']:.0%}"
            f"; student {first['acc_recovery']:.0%} -> {last['acc_recovery']:.0%}"
        )
    lines += [
        textwrap.fill(
            f"wrote in {out}: "
            + ", ".join(f"{n} ({why})" for n, why in files.items() if (out / n).exists()),
            100,
            subsequent_indent="  ",
        ),
    ]
    if ALIASES.get(preset_name, preset_name) == "tiny":
        lines.append(textwrap.fill(TINY_NOTE, 100, subsequent_indent="  "))
    return "\n".join(lines)
