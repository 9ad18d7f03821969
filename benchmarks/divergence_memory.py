"""Peak memory and wall time of forward + backward for token-level divergences (CPU).

Compares TRL's ``GKDTrainer.generalized_jsd_loss`` (beta = 0 / 0.5 / 1 for fkl / jsd / rkl; TRL
has no TV) with ``opd_lib.divergences.token_divergence``, unchunked and chunked. Each
measurement runs in its own subprocess so that the peak RSS is clean: the reported memory is
``ru_maxrss`` after forward + backward minus ``ru_maxrss`` once the inputs exist (after a
small warm-up of the same code path), so allocator effects (glibc heap fragmentation) count,
as they would for a user. One ``[N, V]`` float32 array is the unit: the gradient w.r.t. the
student logits alone is one unit, so 1x is the floor. The teacher logits need no gradient.

    python benchmarks/divergence_memory.py --tokens 1024 --vocab 151936

Every run uses the same number of torch threads, 1 by default: on a small shared machine the
intra-op thread barrier, paid once per operation, swamps the per-chunk operations (try
``--threads 2``). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

KINDS = {"fkl": 0.0, "jsd": 0.5, "rkl": 1.0, "tv": None}  # kind -> TRL's beta (None: no TRL)
IMPLS = ("trl", "ours", "ours-chunked")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _worker(args: argparse.Namespace) -> None:
    """Measure one (impl, kind) and print a JSON line."""
    import torch

    from opd_lib.divergences import token_divergence

    torch.set_num_threads(args.threads)
    if args.impl == "trl":  # imported only where used: it takes seconds
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.gkd import GKDTrainer

    def loss_fn(student, teacher, mask):
        if args.impl == "trl":
            labels = torch.where(mask, 0, -100)
            beta = KINDS[args.kind]
            return GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta)
        chunk = args.chunk_size if args.impl == "ours-chunked" else None
        return token_divergence(
            student, teacher, kind=args.kind, mask=mask, reduction="mean", chunk_size=chunk
        )

    def step(n: int) -> float:
        student = inputs[0][:, :n].detach().requires_grad_()
        start = time.perf_counter()
        loss_fn(student, inputs[1][:, :n], inputs[2][:, :n]).backward()
        return time.perf_counter() - start

    generator = torch.Generator().manual_seed(0)
    shape = (1, args.tokens, args.vocab)
    inputs = (  # uniform rather than normal logits: the values don't matter, init time does
        torch.empty(shape).uniform_(-4, 4, generator=generator),
        torch.empty(shape).uniform_(-4, 4, generator=generator),
        torch.ones(shape[:2], dtype=torch.bool),
    )
    step(2)  # warm-up on a slice: lazy initialisation, thread pools, kernels
    baseline = _peak_rss_mb()
    times = [step(args.tokens) for _ in range(args.repeats)]
    print(json.dumps({"peak_mb": _peak_rss_mb() - baseline, "time_s": min(times)}))


def _measure(args: argparse.Namespace, impl: str, kind: str) -> dict:
    command = [sys.executable, __file__, "--worker", "--impl", impl, "--kind", kind]
    for name in ("tokens", "vocab", "chunk_size", "threads", "repeats"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the minimum is shown")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=list(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    unit_mb = args.tokens * args.vocab * 4 / 2**20
    print(
        f"N={args.tokens} V={args.vocab} float32, one [N, V] array = {unit_mb:.0f} MiB, "
        f"chunk_size={args.chunk_size}, threads={args.threads}, best of {args.repeats}"
    )
    header = f"{'kind':5} {'impl':13} {'peak MiB':>9} {'x[N,V]':>7} {'time s':>7} "
    print(header + f"{'mem/TRL':>8} {'time/TRL':>9}")
    for kind in args.kinds:
        impls = IMPLS if KINDS[kind] is not None else IMPLS[1:]
        results = {impl: _measure(args, impl, kind) for impl in impls}
        for impl, r in results.items():
            ref = results.get("trl")
            ratios = (
                f"{r['peak_mb'] / ref['peak_mb']:8.3f} {r['time_s'] / ref['time_s']:9.2f}"
                if ref
                else f"{'-':>8} {'-':>9}"
            )
            print(
                f"{kind:5} {impl:13} {r['peak_mb']:9.0f} {r['peak_mb'] / unit_mb:7.2f} "
                f"{r['time_s']:7.2f} {ratios}",
                flush=True,
            )


if __name__ == "__main__":
    main()
