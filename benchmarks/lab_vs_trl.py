"""Steps per second and final divergence: the lab trainer against TRL on one tiny pair (CPU).

Four on-policy runs, each from a deep copy of the same teacher/student pair:

* ``ours-gkd``    ``opd_lib.lab`` method ``gkd`` with ``lam=1`` (always the student's samples) and
  generalized JSD ``beta`` (``--beta``, default 0.5; 0 is forward KL, 1 reverse KL, as in TRL);
* ``trl-gkd``     ``trl.experimental.gkd.GKDTrainer`` with ``lmbda=1`` and the same ``beta``;
* ``ours-opd``    method ``opd``: the exact full-vocabulary reverse KL ``KL(student || teacher)``;
* ``trl-distill`` ``trl.DistillationTrainer`` (always on-policy) with ``beta=1`` (reverse KL).

The pair is a preset's prepared pair (``prepare_pair(preset(--preset))``; ``tiny``: a 1-layer
teacher trained for 50 SFT steps on the tagged running sum and a student of the same size made from
it by 20 sloppy steps, a few seconds; ``--cache-dir`` keeps it). A trained pair rather than a random
one, so that the divergences mean something (the tiny teacher is still weak: see its row's
accuracy). All runs share the prompts (the chat-rendered running-sum prompts our trainer draws for
the seed, in its order: TRL reads them sequentially from a ``datasets.Dataset``), the batch size
(one micro-batch, no gradient accumulation), the learning rate (constant, no warm-up), AdamW
(``torch.optim.AdamW``, weight decay 0), gradient clipping at 1, ``max_new_tokens`` (our trainer's
automatic value), sampling at temperature 1 with no top-k / top-p, float32 and ``--threads`` torch
threads. TRL runs with ``use_cpu``, no bf16, no gradient (activation) checkpointing, no evaluation,
logging or saving, ``report_to="none"``; dropout is 0 in these models anyway. Given the same batch,
each pair computes the same loss and gradient (checked by hand: to 1e-7 in float32, GKDTrainer with
its normaliser set to ours), so what differs is the machinery around it, and the points listed
below.

Measured per run: steps/s over ``--steps`` optimizer steps after ``--warmup`` untimed ones (lazy
initialisation, first allocations), from the wall clock at the end of each step (ours: after
``Trainer.train_step``; TRL: a callback's ``on_step_end``), so it covers sampling, the student and
teacher forward passes, backward and the optimizer step. Then the final divergence on a fixed
evaluation set (``--eval-size`` prompts drawn with seed 10 000, chain lengths as in training; the
task space is small, so some also occur in training): one *sampled* completion per prompt at
temperature 1 from a generator seeded 10 000 (the on-policy objective's own distribution; greedy
completions of a weak student jump between modes and track it poorly), scored for every run by the
same code: ``opd_lib.divergences.token_divergence`` on logits with padding-aware position ids,
token means over the counted tokens (up to and including the first EOS) of reverse KL, forward KL
and the generalized JSD at ``--beta``, plus the share of right answers. The speed ratio is ours /
TRL (above 1: ours faster), gkd against GKDTrainer and opd against DistillationTrainer.

    .venv/bin/python benchmarks/lab_vs_trl.py
    .venv/bin/python benchmarks/lab_vs_trl.py --steps 60 --seeds 0 1 2 --out lab_vs_trl.json

The default (30 steps, one seed) takes about 25 s on one CPU thread, 5 s of it for the pair.

Differences that remain (none can be switched off without patching TRL):

* Randomness: ours samples from its own ``torch.Generator``, TRL from the global RNG through
  ``generate``, so the completions, hence the trajectories, differ even at the same seed; compare
  final divergences over several ``--seeds``, not run by run.
* GKDTrainer divides the summed loss by ``num_items_in_batch``, which transformers counts on the
  collated *reference* completions (trace, ``<|im_end|>`` and the template's newline) before the
  on-policy samples replace them; ours and DistillationTrainer divide by the counted tokens of the
  samples. The gradient scale differs by that ratio; AdamW cancels most of it, clipping does not.
* TRL's loss forward passes give no position ids (so they count over the left padding); ours and
  every ``generate`` skip the padding. Qwen3's rotary embeddings only see relative positions, so
  this changes the logits by rounding only.
* DistillationTrainer computes the loss from hidden states with its chunked divergence (on CPU over
  every completion position, padding included, then masked); ours and GKDTrainer materialise the
  ``[B, C, V]`` logits (V = 58 here). Ours and DistillationTrainer compute the student's entropy
  every step, GKDTrainer does not.

Timings are printed, never asserted; on a busy machine, repeat with several seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from opd_lib.divergences import token_divergence
from opd_lib.gkd import completion_logits
from opd_lib.lab.config import Config
from opd_lib.lab.data import encode
from opd_lib.lab.pair import prepare_pair
from opd_lib.lab.presets import preset
from opd_lib.lab.tasks import Example, RunningSum, make_examples
from opd_lib.lab.trainer import Trainer
from opd_lib.sampling import completion_mask, sample_completions

OURS = {"ours-gkd": "gkd", "ours-opd": "opd"}  # run -> our method
RUNS = ("ours-gkd", "trl-gkd", "ours-opd", "trl-distill")
VERSUS = {"gkd": ("ours-gkd", "trl-gkd"), "opd": ("ours-opd", "trl-distill")}
KINDS = ("rkl", "fkl", "jsd")  # table columns: divergences (token means), then "acc"
EVAL_SEED = 10_000


@dataclass
class Setup:
    """What every run shares."""

    base: Config  # steps = warm-up + timed steps; lam = 1
    pair: Any  # ModelPair, deep-copied by each run
    task: RunningSum
    eval_examples: list[Example]
    max_new_tokens: int
    warmup: int


def _run_ours(config: Config, setup: Setup) -> tuple[torch.nn.Module, list[float]]:
    """``config.steps`` calls of ``Trainer.train_step`` (no evaluation): the student, end times."""
    trainer = Trainer(config, copy.deepcopy(setup.pair))
    ends = []
    for _ in range(config.steps):
        trainer.train_step()
        ends.append(time.perf_counter())
    return trainer.student, ends


def _run_trl(name: str, config: Config, setup: Setup) -> tuple[torch.nn.Module, list[float]]:
    """GKDTrainer or DistillationTrainer for ``config.steps`` steps: the student, end times."""
    from datasets import Dataset
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.ends.append(time.perf_counter())

    pair, clock, out_dir = copy.deepcopy(setup.pair), StepClock(), tempfile.mkdtemp()
    rng = random.Random(config.seed)  # our trainer's data_rng: the same prompts, in order
    examples = [setup.task.sample(rng) for _ in range(config.steps * config.batch_size)]
    common: dict[str, Any] = dict(
        output_dir=out_dir,  # stays empty: nothing is saved
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=1,
        max_steps=config.steps,
        learning_rate=config.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=config.weight_decay,
        max_grad_norm=config.grad_clip,
        optim="adamw_torch",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        eval_strategy="no",
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        temperature=config.temperature,
        disable_dropout=True,
    )
    if name == "trl-gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        args = GKDConfig(
            **common, lmbda=1.0, beta=config.beta, max_new_tokens=setup.max_new_tokens,
            train_sampling_strategy="sequential",
        )  # fmt: skip
        rows = [
            {"messages": [{"role": "user", "content": ex.prompt},
                          {"role": "assistant", "content": ex.completion}]}
            for ex in examples
        ]  # fmt: skip
        trainer_cls = GKDTrainer
    else:
        from trl import DistillationConfig, DistillationTrainer

        args = DistillationConfig(
            **common, beta=1.0, max_completion_length=setup.max_new_tokens, shuffle_dataset=False
        )
        rows = [{"prompt": [{"role": "user", "content": ex.prompt}]} for ex in examples]
        trainer_cls = DistillationTrainer
    trainer = trainer_cls(
        model=pair.student,
        teacher_model=pair.teacher,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=pair.tokenizer,
        callbacks=[clock],
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the closing summary print
        trainer.train()
    os.rmdir(out_dir)  # empty, or this raises
    return trainer.model, clock.ends


@torch.no_grad()
def _evaluate(student: torch.nn.Module, setup: Setup) -> dict[str, float]:
    """Token-mean divergences to the teacher on one sampled completion per evaluation prompt
    (temperature 1, a fixed generator), and the share of right answers."""
    tok, examples, beta = setup.pair.tokenizer, setup.eval_examples, setup.base.beta
    student.eval()
    b = encode(tok, examples)
    ids = sample_completions(
        student, b.prompt_ids, b.prompt_mask, setup.max_new_tokens, temperature=1.0,
        generator=torch.Generator().manual_seed(EVAL_SEED),
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    mask = completion_mask(ids, tok.eos_token_id)
    s = completion_logits(student, b.prompt_ids, b.prompt_mask, ids)
    t = completion_logits(setup.pair.teacher, b.prompt_ids, b.prompt_mask, ids)
    n = int(mask.sum())
    out = {
        kind: token_divergence(s, t, kind, beta, mask=mask, reduction="sum").item() / n
        for kind in KINDS
    }
    texts = tok.batch_decode(ids, skip_special_tokens=True)
    right = [setup.task.verify(ex, text).correct for ex, text in zip(examples, texts, strict=True)]
    out["acc"] = sum(right) / len(right)
    return out


def _measure(name: str, seed: int, setup: Setup, threads: int) -> dict[str, Any]:
    """One run: steps/s over the timed steps, then the final divergences."""
    torch.set_num_threads(threads)  # again before every run: a trainer could have changed it
    config = dataclasses.replace(setup.base, seed=seed, method=OURS.get(name, setup.base.method))
    if name in OURS:
        student, ends = _run_ours(config, setup)
    else:
        student, ends = _run_trl(name, config, setup)
    if len(ends) != config.steps:
        raise RuntimeError(f"{name}: {config.steps} steps expected, {len(ends)} timed")
    timed = config.steps - setup.warmup
    steps_per_s = timed / (ends[-1] - ends[setup.warmup - 1])
    return {"run": name, "seed": seed, "steps_per_s": steps_per_s, **_evaluate(student, setup)}


def _values(records: list[dict[str, Any]], name: str, key: str) -> list[float]:
    return [r[key] for r in records if r["run"] == name]


def _mean(records: list[dict[str, Any]], name: str, key: str) -> float:
    return statistics.fmean(_values(records, name, key))


def _row(label: str, speed: str, values: dict[str, float]) -> str:
    cells = " ".join(f"{values[k]:7.4f}" for k in KINDS)
    return f"{label:12} {speed:>11} {cells} {values['acc']:5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them (>= 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--beta", type=float, default=0.5, help="the gkd runs' JSD beta")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "full"),
                        help="CPU lab preset: the pair, batch size, learning rate")  # fmt: skip
    parser.add_argument("--cache-dir", help="where to keep the prepared pair (default: nowhere)")
    parser.add_argument("--eval-size", type=int, default=128, help="evaluation prompts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--out", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # TRL's telemetry ping, any hub lookup
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    for name in ("trl", "transformers", "accelerate"):  # e.g. GKD's "use DistillationTrainer"
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)  # gradient_checkpointing renames
    torch.set_num_threads(args.threads)

    base = preset(
        args.preset, steps=args.warmup + args.steps, lam=1.0, beta=args.beta, temperature=1.0,
        progress=False, threads=args.threads, device="cpu",
    )  # fmt: skip
    base = dataclasses.replace(base, micro_batch_size=base.batch_size)  # no accumulation
    print(f"preparing the {args.preset} pair ...", flush=True)
    pair = prepare_pair(base, args.cache_dir)
    task = RunningSum(base.min_len, base.max_len, hint=base.hint, style=base.trace_style)
    setup = Setup(
        base=base,
        pair=pair,
        task=task,
        eval_examples=make_examples(task, args.eval_size, EVAL_SEED),
        max_new_tokens=Trainer(base, copy.deepcopy(pair)).max_new_tokens,
        warmup=args.warmup,
    )
    teacher = _evaluate(copy.deepcopy(pair.teacher), setup)  # divergences 0: a sanity check
    initial = _evaluate(copy.deepcopy(pair.student), setup)
    print(
        f"{args.steps} timed steps after {args.warmup} warm-up, batch {base.batch_size}, "
        f"lr {base.lr}, max_new_tokens {setup.max_new_tokens}, gkd beta {args.beta}, "
        f"threads {args.threads}, seeds {args.seeds}; divergences: token means on one sampled "
        f"completion for each of {args.eval_size} evaluation prompts",
        flush=True,
    )
    records = []
    for seed in args.seeds:
        for name in args.runs:
            print(f"  seed {seed}: {name}", flush=True)
            records.append(_measure(name, seed, setup, args.threads))

    print(f"{'run':12} {'steps/s':>11} " + " ".join(f"{k:>7}" for k in KINDS) + f" {'acc':>5}")
    print(_row("teacher", "-", teacher))
    print(_row("initial", "-", initial))
    for name in args.runs:
        speeds = _values(records, name, "steps_per_s")
        speed = f"{statistics.fmean(speeds):.2f}"
        if len(speeds) > 1:
            speed += f"±{statistics.stdev(speeds):.2f}"
        print(_row(name, speed, {k: _mean(records, name, k) for k in (*KINDS, "acc")}))
    ratios = {
        method: _mean(records, ours, "steps_per_s") / _mean(records, trl, "steps_per_s")
        for method, (ours, trl) in VERSUS.items()
        if ours in args.runs and trl in args.runs
    }
    for method, ratio in ratios.items():
        print(f"speed ratio ours / TRL ({method}): {ratio:.2f}x")
    if args.out:
        settings = {**vars(args), "max_new_tokens": setup.max_new_tokens}
        summary = {
            name: {
                "steps_per_s": _mean(records, name, "steps_per_s"),
                **{k: _mean(records, name, k) for k in (*KINDS, "acc")},
            }
            for name in args.runs
        }
        result = {
            "summary": summary,  # per run, means over seeds (the table printed above)
            "settings": settings,
            "config": base.to_dict(),
            "teacher": teacher,
            "initial": initial,
            "records": records,
            "speed_ratio": ratios,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
