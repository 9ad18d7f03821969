"""Peak memory of one distillation training step on CPU, measured, against ``estimate_memory``.

Each shape runs in its own subprocess (so peaks do not mix): build a randomly initialised Qwen3
student and teacher from ``Qwen3Config`` at the real vocabulary (151,936), float32, eager
attention; then two training steps on a fixed random batch (the second has AdamW's moments in
memory, as every later step does; one for the full 0.6B, whose peak is the optimizer step, the
same in the first step as in later ones): student forward, teacher forward without gradients, the
token-mean reverse KL over the completion tokens (``fused_token_divergence`` on the final hidden
states, or ``token_divergence`` on full logits), backward, gradient clipping, ``AdamW.step``
(foreach). Measured: the peak resident set size (``ru_maxrss``) minus the resident size just
before the models are built, so the interpreter and the libraries are not counted. The estimate:
``opd_lib.lab.memory.estimate_memory`` with the same shapes (``precision="fp32"``, no sampling
or evaluation: neither is measured here).

    nice -n 10 .venv/bin/python benchmarks/memory_estimate.py   # all shapes (30+ min, busy box)
    nice -n 10 .venv/bin/python benchmarks/memory_estimate.py --shapes small-fused
    .venv/bin/python benchmarks/memory_estimate.py --reestimate  # new formulas, old measurements

The ``qwen3-0.6b`` shape is the full Qwen3-0.6B student (28 layers), about 13 GiB in all: check
``free -g`` first. Its teacher keeps Qwen3-1.7B's widths with one layer (the whole 1.7B in float32
would need 6.4 GiB more than this shared 24 GiB machine can spare). Results go to
``results/memory/cpu.json``; the error is (estimate - measured) / measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

from opd_lib.lab.memory import GIB, QWEN3_0_6B, QWEN3_1_7B, ModelShape, estimate_measured_step

V = 151_936
_SMALL_S = ModelShape(V, 256, 2, 4, 2, 64, 768)
_SMALL_T = ModelShape(V, 512, 2, 8, 4, 64, 1536)
_0_6B_4 = ModelShape(V, 1024, 4, 16, 8, 128, 3072)
_1_7B_1 = ModelShape(V, 2048, 1, 16, 8, 128, 6144)
_1_7B_2 = ModelShape(V, 2048, 2, 16, 8, 128, 6144)
# 0.6B's layers at a small vocabulary: activations, not the LM head, set the peak
_ACT_S = ModelShape(8192, 1024, 2, 16, 8, 128, 3072)
_ACT_T = ModelShape(8192, 1024, 1, 16, 8, 128, 3072)

# name -> (student, teacher, micro batch, prompt length, completion length, fused, checkpointing)
SHAPES = {
    "small-unfused": (_SMALL_S, _SMALL_T, 2, 32, 96, False, False),
    "small-fused": (_SMALL_S, _SMALL_T, 2, 32, 96, True, False),
    "0.6b-4layers": (_0_6B_4, _1_7B_2, 2, 64, 192, True, False),
    "0.6b-4layers-ckpt": (_0_6B_4, _1_7B_2, 2, 64, 192, True, True),
    "qwen3-0.6b": (QWEN3_0_6B, _1_7B_1, 1, 32, 96, True, False),
    "activations": (_ACT_S, _ACT_T, 4, 128, 384, True, False),
    "activations-ckpt": (_ACT_S, _ACT_T, 4, 128, 384, True, True),
}
_ = QWEN3_1_7B  # the real teacher's shape, for reference


def _config(shape: ModelShape):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, intermediate_size=shape.intermediate,
        tie_word_embeddings=shape.tied, attn_implementation="eager", use_cache=False,
    )  # fmt: skip


def measure(name: str) -> dict:
    """Two training steps of shape ``name`` in this process; the measured peak delta."""
    import torch
    from transformers import Qwen3ForCausalLM

    from opd_lib.divergences import token_divergence
    from opd_lib.fused_divergence import fused_token_divergence
    from opd_lib.lm import completion_logits, position_ids

    torch.set_num_threads(1)
    student_shape, teacher_shape, rows, p_len, c_len, fused, ckpt = SHAPES[name]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, student_shape.vocab, (rows, p_len + c_len), generator=gen)
    prompt_mask = torch.ones(rows, p_len, dtype=torch.long)
    prompt_mask[0, : p_len // 4] = 0  # some left padding
    mask = torch.ones(rows, c_len, dtype=torch.bool)  # every completion at full length: the
    # worst case, which is what the estimate is for
    baseline = psutil.Process().memory_info().rss
    torch.manual_seed(0)
    student = Qwen3ForCausalLM(_config(student_shape)).train()
    teacher = Qwen3ForCausalLM(_config(teacher_shape)).eval().requires_grad_(False)
    if ckpt:
        student.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, foreach=True)
    attn = torch.cat([prompt_mask, torch.ones(rows, c_len, dtype=torch.long)], 1)
    pos = position_ids(attn)
    n = int(mask.sum())
    times = []
    for _ in range(1 if name == "qwen3-0.6b" else 2):
        t0 = time.perf_counter()
        if fused:
            hs = student.model(input_ids=ids, attention_mask=attn, position_ids=pos)
            hs = hs.last_hidden_state[:, p_len - 1 : -1]
            with torch.no_grad():
                ht = teacher.model(input_ids=ids, attention_mask=attn, position_ids=pos)
                ht = ht.last_hidden_state[:, p_len - 1 : -1]
            loss = fused_token_divergence(
                hs, student.lm_head.weight, ht, teacher.lm_head.weight, kind="rkl", mask=mask,
                reduction="sum",
            ) / n  # fmt: skip
        else:
            s = completion_logits(student, ids[:, :p_len], prompt_mask, ids[:, p_len:])
            with torch.no_grad():
                t = completion_logits(teacher, ids[:, :p_len], prompt_mask, ids[:, p_len:])
            loss = token_divergence(s, t, "rkl", mask=mask, reduction="sum") / n
        loss.backward()
        del loss
        hs = ht = s = t = None
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return _with_estimate(
        {
            "shape": name,
            "student": student_shape.__dict__,
            "teacher": teacher_shape.__dict__,
            "micro_batch": rows,
            "prompt_len": p_len,
            "completion_len": c_len,
            "fused_divergence": fused,
            "gradient_checkpointing": ckpt,
            "measured_gib": (peak - baseline) / GIB,
            "step_s": times,
        }
    )


def _with_estimate(r: dict) -> dict:
    """Record ``r`` with today's estimate of its shape and the relative error."""
    est = estimate_measured_step(r)
    measured = r["measured_gib"]
    return r | {
        "estimated_gib": est.total / GIB,
        "error": (est.total / GIB - measured) / measured,
        "estimate": est.gib(),
        "phase": est.phase,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--one", choices=list(SHAPES), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--out", default="results/memory/cpu.json")
    parser.add_argument("--reestimate", action="store_true", help="only redo the estimates")
    args = parser.parse_args()
    path = Path(args.out)
    if args.reestimate:
        shapes = [_with_estimate(r) for r in json.loads(path.read_text())["shapes"]]
        path.write_text(json.dumps({"shapes": shapes}, indent=1) + "\n")
        for r in shapes:
            print(f"{r['shape']:18} measured {r['measured_gib']:.2f} GiB, estimated "
                  f"{r['estimated_gib']:.2f} GiB ({r['error']:+.1%})")  # fmt: skip
        return
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    results = []
    for name in args.shapes:
        free = psutil.virtual_memory().available / GIB
        print(f"{name}: running ({free:.1f} GiB available) ...", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        out = subprocess.run(
            [sys.executable, __file__, "--one", name], capture_output=True, text=True, env=env
        )
        if out.returncode:
            raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(
            f"  measured {r['measured_gib']:.2f} GiB, estimated {r['estimated_gib']:.2f} GiB "
            f"({r['error']:+.1%}; peak phase: {r['phase']})",
            flush=True,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {r["shape"]: r for r in old.get("shapes", [])} | {r["shape"]: r for r in results}
    path.write_text(json.dumps({"shapes": list(merged.values())}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
