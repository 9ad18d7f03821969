"""Forward+backward cost of a per-token divergence computed from hidden states and LM heads (CPU).

Methods, all computing the masked mean of one divergence and its gradient w.r.t. the student's
hidden states (heads frozen, as with LoRA; Liger builds the head gradient regardless):

* ``ours``: ``opd_lib.fused_divergence.fused_token_divergence`` (token chunks, full-vocabulary
  rows, gradient in the forward, padding never projected);
* ``trl``: TRL 1.16's ``_chunked_divergence_loss`` (the ``DistillationTrainer`` path around
  ``trl/kernels/chunked_divergence.py``'s ``ChunkedDivergenceFunction``; on CPU its torch
  fallback, which projects padding too);
* ``liger``: Liger's ``LigerFusedLinearJSDLoss`` (eager, ``compiled=False``: no compiler on the
  CPU path), soft loss only, same ``chunk_size`` as ours; skipped when it does not import
  (``--liger-path`` adds a folder holding an unpacked wheel to ``sys.path``);
* ``naive``: full logits ``hidden @ head.T`` for both models, then the chunked
  ``token_divergence`` (the library's leanest logits-level path).

Memory method: every measurement runs in a fresh subprocess that allocates the inputs (hidden
states, heads, mask), runs the method once on 8 tokens (lazy initialisation, thread pools), then
reads ``ru_maxrss``; the reported "extra memory" is ``ru_maxrss`` after one full forward+backward
minus that baseline. Peak RSS counts what the allocator really kept (glibc fragmentation
included), as a user would see it; it cannot go below 0 and reads ~0 for anything smaller than the
warm-up's own peak, so the smallest numbers are upper bounds of a few MiB. The floor shown with the
results is ``M * H * 4`` bytes (the gradient of the ``M`` selected hidden states) plus 4 floats
per token. A method whose estimated peak does not fit ``--memory-budget-gb`` is recorded as "does
not fit" without running it; one that runs past ``--max-seconds`` as "timed out".

    nice -n 10 python benchmarks/fused_divergence.py            # the full grid
    python benchmarks/fused_divergence.py --quick               # seconds: a smoke test
    python benchmarks/fused_divergence.py --merge a.json b.json # one table from split runs

A grid split across several invocations (e.g. TRL and ours in parallel processes on a shared
machine) is gathered by ``--merge``; grid cells that no file holds are recorded as "not run
(time budget)", and the header lists each file's start time and load average.

Every process uses the same number of torch threads (``--threads``, 1 by default). ``time_s`` is
the process's CPU time for the pass (``time.process_time``; with one thread it is the work done,
and it stays meaningful on a shared, oversubscribed machine where wall time mostly measures the
neighbours); ``wall_s`` is the wall time. Times are printed and saved, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

KINDS = {"fkl": 0.0, "rkl": 1.0, "jsd": 0.5}  # kind -> beta (TRL's and Liger's beta)
METHODS = ("trl", "ours", "liger", "naive")
ROW = 512  # tokens per sequence; the last 10 % of each row is padding
OUT = Path(__file__).resolve().parents[1] / "results" / "fused_divergence"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _estimate_mb(method: str, n: int, h: int, v: int, chunk: int) -> float:
    """Rough peak extra memory (MiB), beyond the inputs, used only to skip what cannot fit."""
    row = v * 4 / 2**20  # one float32 vocabulary row
    if method == "naive":
        return 3.5 * n * row  # student logits, their gradient, teacher logits, scratch
    if method == "trl":
        return 12 * min(n, 4096) * 32768 * 4 / 2**20  # two tiles + torch-fallback temporaries
    if method == "liger":
        return 12 * chunk * row + v * h * 4 / 2**20  # autograd per chunk + the head gradient
    return (2 * chunk + 64) * row + 4 * n * h * 4 / 2**20  # two [chunk, V] + [16, V] blocks


def _chunk(args: argparse.Namespace, n: int) -> int:
    """``--chunk-size``, or ours' default (``auto_chunk_size`` of the selected tokens)."""
    from opd_lib.fused_divergence import auto_chunk_size

    rows = max(1, n // ROW)
    selected = rows * (n // rows - round(args.padding * (n // rows)))
    return args.chunk_size or auto_chunk_size(selected)


def _loss_fn(method: str, kind: str, chunk: int):
    import torch

    beta = KINDS[kind]
    if method == "ours":
        from opd_lib.fused_divergence import fused_token_divergence

        def ours(hs, w, ht, wt, mask):
            return fused_token_divergence(
                hs, w, ht, wt, kind=kind, mask=mask, reduction="mean", chunk_size=chunk
            )

        return ours
    if method == "trl":
        from trl.trainer.distillation_trainer import _chunked_divergence_loss

        def trl(hs, w, ht, wt, mask):
            return _chunked_divergence_loss(hs, ht, w, wt, mask, beta)[0]

        return trl
    if method == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        loss = LigerFusedLinearJSDLoss(
            weight_hard_loss=0.0,
            weight_soft_loss=1.0,
            beta=beta,
            compiled=False,
            chunk_size=chunk,
        )

        def liger(hs, w, ht, wt, mask):
            labels = torch.where(mask, 0, -100).reshape(-1)
            flat_s, flat_t = hs.reshape(-1, hs.shape[-1]), ht.reshape(-1, ht.shape[-1])
            return loss(flat_s, w, flat_t, wt, labels)

        return liger
    from opd_lib.divergences import token_divergence

    def naive(hs, w, ht, wt, mask):
        student = hs @ w.t()
        with torch.no_grad():
            teacher = ht @ wt.t()
        return token_divergence(
            student, teacher, kind=kind, mask=mask, reduction="mean", chunk_size=32
        )

    return naive


def _worker(args: argparse.Namespace) -> None:
    """Measure one (method, kind, N, H) and print a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    if args.liger_path:
        sys.path.insert(0, args.liger_path)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    loss_fn = _loss_fn(args.method, args.kind, _chunk(args, args.tokens[0]))
    gen = torch.Generator().manual_seed(0)
    n, h, v = args.tokens[0], args.hidden[0], args.vocab
    rows = max(1, n // ROW)

    def normal(*shape, scale=1.0):
        return torch.empty(shape).normal_(0.0, scale, generator=gen)

    student_hidden = normal(rows, n // rows, h)
    teacher_hidden = normal(rows, n // rows, h)
    student_head = normal(v, h, scale=2 / h**0.5)  # logits with a std of ~2
    teacher_head = normal(v, h, scale=3 / h**0.5)
    mask = torch.ones(rows, n // rows, dtype=torch.bool)
    mask[:, n // rows - round(args.padding * (n // rows)) :] = False

    def step(t: int) -> float:
        hs = student_hidden[:, :t].detach().requires_grad_()
        start, cpu = time.perf_counter(), time.process_time()
        loss_fn(hs, student_head, teacher_hidden[:, :t], teacher_head, mask[:, :t]).backward()
        elapsed = time.perf_counter() - start, time.process_time() - cpu
        assert hs.grad is not None and torch.isfinite(hs.grad).all()
        return elapsed

    step(8)
    baseline = _peak_rss_mb()
    wall, cpu = step(n // rows)
    print(json.dumps({"time_s": cpu, "wall_s": wall, "extra_mb": _peak_rss_mb() - baseline}))


def _measure(args: argparse.Namespace, method: str, kind: str, n: int, h: int) -> dict:
    record = {"method": method, "kind": kind, "tokens": n, "hidden": h}
    chunk = _chunk(args, n)
    record["chunk_size"] = chunk
    estimate = _estimate_mb(method, n, h, args.vocab, chunk)
    inputs_mb = 2 * args.vocab * h * 4 / 2**20 + 2 * n * h * 4 / 2**20
    record["estimate_mb"] = round(estimate)
    if method == "liger" and not _liger_imports(args):
        return record | {"status": "unavailable"}
    if (estimate + inputs_mb) / 1024 > args.memory_budget_gb:
        return record | {"status": "does not fit"}
    left = args.deadline - time.time()
    if left < 30:
        return record | {"status": "not run (time budget)"}
    command = [sys.executable, __file__, "--worker", "--method", method, "--kind", kind]
    command += ["--tokens", str(n), "--hidden", str(h), "--vocab", str(args.vocab)]
    command += ["--chunk-size", str(chunk), "--threads", str(args.threads)]
    command += ["--padding", str(args.padding), "--liger-path", args.liger_path or ""]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=min(args.max_seconds, left),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return record | {"status": "timed out"}
    if done.returncode < 0:  # SIGKILL with no message: usually the kernel's out-of-memory killer
        return record | {"status": f"killed by signal {-done.returncode}"}
    if done.returncode != 0:
        return record | {"status": "error", "error": done.stderr.strip().splitlines()[-1:]}
    return record | {"status": "ok"} | json.loads(done.stdout.strip().splitlines()[-1])


def _liger_imports(args: argparse.Namespace) -> bool:
    code = "import sys; sys.path.insert(0, sys.argv[1]); import liger_kernel.chunked_loss"
    done = subprocess.run([sys.executable, "-c", code, args.liger_path or ""], capture_output=True)
    return done.returncode == 0


def _table(runs: list[dict]) -> str:
    """Markdown table: one row per (shape, kind, method), ratios against TRL of the same cell."""
    lines = [
        "| N | H | kind | method | status | CPU s | extra MiB | time / TRL | memory / TRL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        ref = next(
            (
                x
                for x in runs
                if x["method"] == "trl"
                and x["status"] == "ok"
                and (x["tokens"], x["hidden"], x["kind"]) == (r["tokens"], r["hidden"], r["kind"])
            ),
            None,
        )
        ok = r["status"] == "ok"
        cells = [str(r["tokens"]), str(r["hidden"]), r["kind"], r["method"], r["status"]]
        cells += [f"{r['time_s']:.1f}", f"{r['extra_mb']:.0f}"] if ok else ["-", "-"]
        if ok and ref:
            cells += [
                f"{r['time_s'] / ref['time_s']:.2f}",
                f"{r['extra_mb'] / max(ref['extra_mb'], 1):.3f}",
            ]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _merge(files: list[Path], grid: list[tuple[str, str, int, int]]) -> tuple[list[dict], list]:
    """The rows of earlier runs (``--merge``), one per ``(method, kind, N, H)`` of ``grid`` (an
    "ok" row wins over another status); a cell that none of them holds is recorded as
    "not run (time budget)", or "does not fit" when another kind of the same method and shape
    did not (the memory estimate ignores the kind). Also returns each file's name, start time
    and load average."""
    found: dict[tuple, dict] = {}
    sources = []
    for path in files:
        data = json.loads(path.read_text())
        sources.append([path.name, data["meta"]["started"], data["meta"]["load_average_at_start"]])
        for r in data["runs"]:
            key = (r["method"], r["kind"], r["tokens"], r["hidden"])
            if key not in found or (r["status"] == "ok" and found[key]["status"] != "ok"):
                found[key] = r | {"source": path.name}
    runs = []
    for method, kind, n, h in grid:
        missing = {"method": method, "kind": kind, "tokens": n, "hidden": h}
        unfit = any(
            r["status"] == "does not fit" and (k[0], k[2], k[3]) == (method, n, h)
            for k, r in found.items()
        )
        missing["status"] = "does not fit" if unfit else "not run (time budget)"
        runs.append(found.get((method, kind, n, h), missing))
    return runs, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="ours and Liger (default: ours' auto size)"
    )
    parser.add_argument("--padding", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="per measurement")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=math.inf,
        help="record what would start later as 'not run (time budget)'",
    )
    parser.add_argument(
        "--memory-budget-gb",
        type=float,
        default=None,
        help="skip what would not fit (default: 70%% of available memory)",
    )
    parser.add_argument("--liger-path", default=os.environ.get("LIGER_PATH", ""))
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a smoke test")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="measure nothing: gather the rows of earlier --out files over the grid",
    )
    parser.add_argument("--note", default="", help="a paragraph for the Markdown header")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=list(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    args.deadline = time.time() + 60 * args.budget_minutes
    if args.quick:
        args.tokens, args.hidden, args.vocab = [1024], [64], 8192
    if args.memory_budget_gb is None:
        import psutil

        args.memory_budget_gb = 0.7 * psutil.virtual_memory().available / 2**30
    out = args.out or OUT / ("quick.json" if args.quick else "cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    import torch
    import trl

    meta = {
        "vocab": args.vocab,
        "chunk_size": args.chunk_size or "auto_chunk_size (per row: chunk_size)",
        "padding": args.padding,
        "threads": args.threads,
        "row": ROW,
        "torch": torch.__version__,
        "trl": trl.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": os.getloadavg(),
        "memory_budget_gb": args.memory_budget_gb,
        "budget_minutes": None if math.isinf(args.budget_minutes) else args.budget_minutes,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "memory_method": "ru_maxrss after one forward+backward minus ru_maxrss after inputs "
        "and an 8-token warm-up, fresh subprocess per measurement",
    }
    header = (
        f"Forward+backward of a masked-mean divergence, V={args.vocab}, {args.padding:.0%} "
        f"padding, heads frozen, {args.threads} torch thread(s), "
        f"chunk_size={args.chunk_size or 'auto_chunk_size'}; "
        "CPU seconds of the pass and peak extra RSS, one fresh process per row "
        "(benchmarks/fused_divergence.py).\n\n"
    ) + (f"{args.note}\n\n" if args.note else "")
    runs: list[dict] = []
    shapes = sorted(((n, h) for n in args.tokens for h in args.hidden), key=lambda s: s[0] * s[1])
    if args.merge:
        grid = [(m, k, n, h) for n, h in shapes for k in args.kinds for m in args.methods]
        runs, meta["merged_from"] = _merge(args.merge, grid)
        meta["note"] = args.note
        sources = "".join(
            f"- `{n}`: started {t}, load average {a}\n" for n, t, a in meta["merged_from"]
        )
        header += f"Rows gathered (`--merge`) from separate runs:\n\n{sources}\n"
        out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
        out.with_suffix(".md").write_text(header + _table(runs))
        print(_table(runs))
        return
    print(f"V={args.vocab} chunk={args.chunk_size} threads={args.threads} -> {out}", flush=True)
    for n, h in shapes:
        for kind in args.kinds:
            for method in args.methods:
                record = _measure(args, method, kind, n, h)
                runs.append(record)
                out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
                out.with_suffix(".md").write_text(header + _table(runs))
                print(
                    _table(
                        [
                            x
                            for x in runs
                            if x["kind"] == kind and x["tokens"] == n and x["hidden"] == h
                        ]
                    ).splitlines()[-1],
                    flush=True,
                )
    print(_table(runs))


if __name__ == "__main__":
    main()
