"""One training loop for every method in the book (``sft``, ``kd``, ``gkd``, ``opd``, ``rl``,
``opsd``), CleanRL style: the hyperparameters in one dataclass (:mod:`opd_lib.lab.config`), one
per-token loss per method (:mod:`opd_lib.lab.losses`), and this file, in the order things happen.

Every step: draw prompts -> build the sequences to train on (a *rollout*; sampling happens here,
without gradients, for the whole batch) -> split into micro-batches -> accumulate gradients of
``sum of per-token losses / total counted tokens of the whole batch`` -> stop on a non-finite
loss or gradient -> clip -> optimizer step. Normalising by the batch's total token count (not
each micro-batch's mean) makes gradient accumulation give exactly the gradient of one large batch.

Precision (``opd_lib.lab.precision``): the models' forwards (and sampling) run under autocast
(``bf16-amp``/``fp16-amp``) over float32 master weights; the losses are computed outside it, in
float32 as the divergences do for half-precision inputs (autocast would push the fused
divergence's own matmuls into half precision). With fp16 a gradient scaler multiplies the loss
before backward and skips a step whose gradients overflowed (logged ``skipped``, not an error).
The models are readied by ``opd_lib.lab.run_models`` (dtypes, LoRA, gradient checkpointing, the
logits restricted to the tokenizer's tokens).
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from opd_lib._threads import torch_threads
from opd_lib.gkd import choose_source, lambda_schedule
from opd_lib.lab.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from opd_lib.lab.config import Config, check_resumable, fused_on, refuse_foreign_checkpoint
from opd_lib.lab.data import Rollout, auto_max_new_tokens, encode, eval_suite, make_task
from opd_lib.lab.evaluate import evaluate, generate
from opd_lib.lab.lora import frozen_copy, load_resume_state, resume_state
from opd_lib.lab.losses import completion_side, entropy_sum, fusable, hinted_side, loss_for
from opd_lib.lab.metrics import JsonlLogger, flops, n_params
from opd_lib.lab.pair import prepare_pair, teacher_from_run
from opd_lib.lab.precision import MixedPrecision
from opd_lib.lab.preflight import check_run
from opd_lib.lab.run_models import evaluating, on_device, prepare_student, prepare_teacher
from opd_lib.lab.tasks import Example, render_prompt
from opd_lib.opsd import hinted_teacher_inputs
from opd_lib.rl import group_advantages
from opd_lib.sampling import completion_mask

__all__ = ["Config", "Trainer", "prepare_pair", "train"]


def train(config: Config, out_dir: str | Path | None = None, pair=None) -> list[dict[str, Any]]:
    """Prepare the pair (cached under ``config.cache_dir`` or ``out_dir``), then run (resuming
    from ``out_dir/ckpt.pt`` if there is one; a checkpoint of other settings is refused before
    anything is written), on ``config.threads`` torch threads. Returns this call's records."""
    with torch_threads(config.threads):
        if out_dir is not None:
            refuse_foreign_checkpoint(config, Path(out_dir))
        if pair is None:
            pair = prepare_pair(config, config.cache_dir or out_dir)
        if config.teacher_from:
            pair = teacher_from_run(pair, config.teacher_from)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        return Trainer(config, pair, out_dir).run()


class Trainer:
    """One run: ``Trainer(config, pair, out_dir).run()``. With ``out_dir``, metrics go to
    ``out_dir/metrics.jsonl`` and checkpoints to ``out_dir/ckpt.pt``, and an existing checkpoint
    is resumed from."""

    def __init__(self, config: Config, pair, out_dir: str | Path | None = None) -> None:
        config.validate()
        self.config = c = config
        self.out = Path(out_dir) if out_dir is not None else None
        if self.out is not None:
            refuse_foreign_checkpoint(c, self.out)
        self.pair, self.tok, self.device = pair, pair.tokenizer, pair.device
        self.student, self.teacher = pair.student, pair.teacher
        # checkpoints hold these of the student (LoRA: the adapters) or, None, its whole state
        self.saved = prepare_student(self.student, c, self.tok)
        prepare_teacher(self.teacher, c, self.tok, self.device)  # (tokenizers: the preflight)
        self.student.zero_grad(set_to_none=True)  # no stale gradients from earlier training
        self.mp = MixedPrecision.for_precision(c.precision, self.device)
        self.task = make_task(c)
        self.suite = eval_suite(c, self.task)  # fixed evaluation sets (every seed and method)
        self.max_new_tokens = auto_max_new_tokens(c, self.tok)
        self.loss_fn = loss_for(c)
        self.fused = fused_on(c.fused_divergence, self.student.config.vocab_size)
        self.params = params = [p for p in self.student.parameters() if p.requires_grad]
        if c.optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            self.opt = torch.optim.SGD(params, lr=c.lr)
        self.data_rng = random.Random(c.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(c.seed)
        # the environment's execution noise in the student's samples (opd_lib.lab.noise)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(c.seed + 1_000_003)
        torch.manual_seed(c.seed)
        self.self_teacher = None  # OPSD's frozen or EMA self-teacher (LoRA: shares the base)
        if c.method == "opsd" and c.opsd_teacher != "live":
            self.self_teacher = frozen_copy(self.student)
            mine = dict(self.self_teacher.named_parameters())
            self.ema_pairs = [(mine[n], p) for n, p in self.student.named_parameters()
                              if p.requires_grad]  # fmt: skip
        self.reference = None  # rl's KL anchor: the initial student (frozen before any resume)
        if c.method == "rl" and c.rl_kl > 0:
            self.reference = frozen_copy(self.student)
        self.n_student, self.n_teacher = n_params(self.student), n_params(self.teacher)
        self.step = 0
        # trained_tokens: prompt + completion tokens of the forward/backward passes
        self.totals = {"flops": 0.0, "trained_tokens": 0, "wall_s": 0.0}
        self.logger = JsonlLogger(self.out / "metrics.jsonl") if self.out else None
        self.resumed = self._maybe_resume()

    # -------------------------------------------------------------- the loop

    def run(self) -> list[dict[str, Any]]:
        """Check the pair, then train to ``config.steps``; returns the records of this call."""
        c = self.config
        self.history: list[dict[str, Any]] = []
        if c.skip_preflight:
            warnings.warn("skip_preflight: the teacher/student pair is not checked", stacklevel=2)
        else:
            # the prompts the student answers (OPSD's hinted ones are its self-teacher's)
            sets = [getattr(self.task, "examples", [])]
            sets += [exs for name, exs in self.suite.sets.items() if name != "hinted"]
            teacher_tok = self.pair.teacher_tokenizer or self.tok
            prompts = [ex.prompt for exs in sets for ex in exs]
            check_run(c, self.student, self.teacher, self.tok, teacher_tok, prompts,
                      self.max_new_tokens)  # fmt: skip
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
            save_checkpoint(self.out / "student.pt",
                            {"student": resume_state(self.student, self.saved)})  # fmt: skip
        return self.history

    def train_step(self) -> dict[str, Any]:
        """One optimizer step; raises ``FloatingPointError`` (before the update, so no checkpoint
        ever holds the state) if the loss or the gradient norm is not finite, except an fp16 step
        whose scaled gradients overflowed: the scaler skips it (``skipped`` in the record) unless
        its scale has fallen below 1."""
        c = self.config
        t0 = time.perf_counter()
        self.student.train()
        roll = self.rollout([self.draw() for _ in range(c.batch_size)])
        n_tokens = int(roll.mask.sum())  # the normaliser: ALL counted tokens of the batch
        rows = c.micro_batch_size * (c.group_size if c.method == "rl" else 1)
        loss, acc = 0.0, {}
        for start in range(0, roll.mask.shape[0], rows):
            part_loss, stats = self.loss_sum(roll.rows(slice(start, start + rows)))  # autocast
            self.mp.backward(part_loss / n_tokens)
            loss += part_loss.item() / n_tokens
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + v
        grad_norm = self.mp.unscale_and_clip(self.opt, self.params, c.grad_clip)
        overflow = self.mp.scaler is not None and math.isfinite(loss)  # fp16: the scaler decides
        if not (math.isfinite(loss) and (math.isfinite(grad_norm) or overflow)):
            self.opt.zero_grad(set_to_none=True)
            raise FloatingPointError(
                f"step {self.step + 1}: non-finite loss ({loss}) or gradient; stopped before the "
                f"update (the last checkpoint, if any, is from before step {self.step + 1})"
            )
        skipped = not self.mp.apply(self.opt)
        if skipped and self.mp.scale() < 1.0:
            raise FloatingPointError(
                f"step {self.step + 1}: fp16 gradients overflow even at loss scale "
                f"{self.mp.scale():g}; the model is diverging (no update was applied)"
            )
        if self.self_teacher is not None and c.opsd_teacher == "ema":
            with torch.no_grad():
                for pt, ps in self.ema_pairs:
                    pt.lerp_(ps, 1.0 - c.ema_decay)
        self.step += 1
        step_flops = acc["train_flops"] + acc["teacher_flops"] + roll.stats.get("gen_flops", 0.0)
        dt = time.perf_counter() - t0
        self.totals["flops"] += step_flops
        self.totals["trained_tokens"] += acc["trained_tokens"]
        self.totals["wall_s"] += dt
        record = {
            "type": "train", "step": self.step, "loss": loss, "tokens": n_tokens,
            "source": roll.source, "entropy": acc["entropy_sum"] / n_tokens,
            "grad_norm": grad_norm, "flops": self.totals["flops"],
            "tokens_per_s": acc["trained_tokens"] / dt, "time_s": dt,
            "wall_s": self.totals["wall_s"],
        }  # fmt: skip
        if self.mp.scaler is not None:
            record |= {"skipped": skipped, "loss_scale": self.mp.scale()}
        if "divergence_sum" in acc:
            record["divergence"] = acc["divergence_sum"] / n_tokens
        for key in ("lam", "reward"):
            if key in roll.stats:
                record[key] = roll.stats[key]
        return record

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
            industrial = c.lam_schedule == "industrial"
            stats["lam"] = lambda_schedule(self.step, c.steps) if industrial else c.lam
            source = choose_source(stats["lam"], c.source == "teacher", self.gen)
        if source == "data":
            completion, mask = b.completion_ids, b.mask
        else:
            model = self.teacher if source == "teacher" else self.student
            noise = c.rollout_noise if source == "student" else 0.0
            completion = self.sample(model, b.prompt_ids, b.prompt_mask, noise=noise)
            mask = completion_mask(completion, self.tok.eos_token_id)
            n = self.n_teacher if source == "teacher" else self.n_student
            stats["gen_flops"] = flops(0, 0, generated={n: int(mask.sum() + b.prompt_mask.sum())})
        roll = Rollout(b.prompt_ids, b.prompt_mask, completion, mask, source, stats=stats)
        if c.method == "rl":
            texts = self.decode(completion)
            verdicts = [self.task.verify(ex, t) for ex, t in zip(examples, texts, strict=True)]
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

    def loss_sum(self, r: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over the micro-batch's counted tokens of the method's per-token loss (the caller
        divides by the whole batch's token count), and statistics (sums, not means). Fused: the
        student and teacher are ``losses.Hidden`` (hidden states + head), never ``[B, C, V]``."""
        fused = self.fused and fusable(self.config)  # a kd/gkd/opd/opsd divergence, fused on
        with self.mp.autocast():  # the forwards; the losses compute in float32 (divergences)
            student = completion_side(self.student, r, fused)
            stats = {"entropy_sum": entropy_sum(student, r.mask), "teacher_flops": 0.0}
        n_scored = int(r.prompt_mask.sum() + r.mask.sum())

        @torch.no_grad()
        @self.mp.autocast()
        def teacher():  # computed (and its FLOPs counted) only if the loss asks
            if self.config.method == "rl":  # GRPO's reference policy, for its KL anchor
                stats["teacher_flops"] = flops(0, 0, scored={self.n_student: n_scored})
                return completion_side(self.reference, r, False)
            if self.config.method == "opsd":  # the student itself (or its copy), shown a hint
                model = self.student if self.self_teacher is None else self.self_teacher
                n = {self.n_student: int(r.teacher_attn.sum())}
                stats["teacher_flops"] = flops(0, 0, scored=n)
                return hinted_side(model, r, fused)
            stats["teacher_flops"] = flops(0, 0, scored={self.n_teacher: n_scored})
            return completion_side(self.teacher, r, fused)

        per_token, method_stats = self.loss_fn(student, r, teacher, self.config)
        stats.update(method_stats)
        total = torch.where(r.mask, per_token, torch.zeros_like(per_token)).sum()
        stats["train_flops"] = flops(self.n_student, n_scored)
        stats["trained_tokens"] = n_scored
        return total, stats

    def evaluate(self, model=None, prefix: str = "") -> dict[str, Any]:
        """:func:`opd_lib.lab.evaluate.evaluate` of ``model`` (default: the student) on this run's
        evaluation sets at ``eval_temperature``; without ``prefix`` also ``model``'s KL to the
        teacher. The student is back in training mode afterwards."""
        model = self.student if model is None else model
        with on_device(self.teacher, self.device), self.mp.autocast():
            out = evaluate(
                model, self.suite, self.tok, max_new_tokens=self.max_new_tokens,
                temperature=self.config.eval_temperature,
                teacher=None if prefix else self.teacher, prefix=prefix, fused=self.fused,
                micro_batch=self.config.eval_micro_batch_size, noise=self.config.eval_noise,
            )  # fmt: skip
        self.student.train()
        return out

    # -------------------------------------------------------------- helpers

    def sample(
        self, model, prompt_ids, prompt_mask, temperature: float | None = None, gen=None,
        noise: float = 0.0,
    ):  # fmt: skip
        """Completions of ``model`` (in eval mode, under the run's autocast) at ``temperature``
        (default: the config's) from ``gen`` (default: the run's generator), with execution
        ``noise`` from the run's noise generator."""
        temperature = self.config.temperature if temperature is None else temperature
        gen = self.gen if gen is None else gen
        with evaluating(model), self.mp.autocast():
            return generate(
                model, self.tok, prompt_ids, prompt_mask, self.max_new_tokens, temperature, gen,
                noise, self.noise_gen,
            )  # fmt: skip

    def draw(self) -> Example:
        """One training prompt and reference trace; a ``data_perturb`` share of them is
        ``task.perturbed`` (one step broken, recovered after; no draw when it is 0)."""
        ex = self.task.sample(self.data_rng)
        if self.config.data_perturb and self.data_rng.random() < self.config.data_perturb:
            ex = self.task.perturbed(ex, self.data_rng)
        return ex

    def decode(self, ids: torch.Tensor) -> list[str]:
        return self.tok.batch_decode(ids, skip_special_tokens=True)

    def log(self, record: dict[str, Any]) -> None:
        record = {"method": self.config.method, "seed": self.config.seed, **record}
        self.history.append(record)
        if self.logger:
            self.logger.log(record)

    # -------------------------------------------------------------- checkpoints

    @property
    def ckpt_path(self) -> Path | None:
        return self.out / "ckpt.pt" if self.out else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "student": resume_state(self.student, self.saved),
            "optimizer": self.opt.state_dict(),
            "scaler": self.mp.state_dict(),
            "self_teacher": None
            if self.self_teacher is None
            else resume_state(self.self_teacher, self.saved),
            "rng": rng_state(
                {"sample": self.gen, "noise": self.noise_gen}, {"data": self.data_rng}
            ),
            "totals": dict(self.totals),
            "metrics_offset": self.logger.offset if self.logger else 0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_resumable(self.config, state["config"])
        load_resume_state(self.student, state["student"], self.saved)
        self.opt.load_state_dict(state["optimizer"])
        self.mp.load_state_dict(state.get("scaler", {}))
        if self.self_teacher is not None:
            load_resume_state(self.self_teacher, state["self_teacher"], self.saved)
        set_rng_state(
            state["rng"], {"sample": self.gen, "noise": self.noise_gen}, {"data": self.data_rng}
        )
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
