"""PASA (npu_fp16) against torch SDPA in fp32 at the reference shape (``make bench``). Prints; asserts nothing.

The two are timed interleaved in the same run (SDPA, PASA, SDPA, PASA, ...) so that load from
other processes on a shared machine hits both alike; the figure is the ratio of the best times
(best of ``--repeats``), repeated ``--rounds`` times. ``--threads`` sets torch's intra-op threads
(default 1: the ratio then compares single-core work). The ratio of the best CPU times of the
process is printed too: on a loaded machine the wall time also measures the scheduler's share,
the CPU time only the work (both still suffer from caches and memory bandwidth shared with others).

Usage: python benchmarks/bench_kernel.py [--repeats 7] [--rounds 3] [--threads 1] [--heads 28 --kv-heads 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def ratio_run(q, k, v, repeats: int, methods=("pasa",), cpu: dict | None = None) -> dict:
    """Best wall time per method (and, into ``cpu`` if given, best CPU time of this process)."""
    from pasa_npu.methods import run_method

    q32, k32, v32 = q.float(), k.float(), v.float()

    def sdpa():
        torch.nn.functional.scaled_dot_product_attention(q32, k32, v32, enable_gqa=True)

    def method(name):
        if name.endswith(("@eager", "@loop")):
            from pasa_npu import _fused

            base, how = name.rsplit("@", 1)
            # @eager: the fused CPU backend switched off; @loop: its Python tile loop (torch.matmul)
            ctx = _fused.disabled if how == "eager" else _fused.python_loop

            def run():
                with ctx():
                    run_method(base, q, k, v)

            return run
        return lambda: run_method(name, q, k, v)

    fns = {"sdpa_fp32": sdpa}
    for m in methods:
        fns[m] = method(m)
    for fn in fns.values():  # warm-up
        fn()
    times = {name: [] for name in fns}
    cpu_times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)
    if cpu is not None:
        cpu.update({name: min(ts) for name, ts in cpu_times.items()})
    best = {name: min(ts) for name, ts in times.items()}
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--heads", type=int, default=28)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=1407)
    p.add_argument(
        "--methods",
        default="pasa,pasa@loop,pasa@eager",
        help="comma-separated harness methods to time against SDPA; NAME@eager: with the fused backend off; "
        "NAME@loop: the fused backend's Python tile loop (no one-call tiles)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from pasa_npu import data

    methods = tuple(m for m in args.methods.split(",") if m)
    q, k, v = data.make_qkv(
        "uniform",
        mean=30.0,
        amplitude=0.5,
        batch=1,
        heads=args.heads,
        kv_heads=args.kv_heads,
        seq_q=args.seq,
        seq_kv=args.seq,
        head_dim=128,
    )
    from pasa_npu.kernel import fused_backend

    print(
        f"kernel vs SDPA fp32: 1x{args.heads}/{args.kv_heads}x{args.seq}x128, fp16 inputs, torch {torch.__version__}, "
        f"{args.threads} thread(s), best of {args.repeats}, interleaved"
    )
    print(f"  vector passes: {fused_backend()}")
    ratios = {m: [] for m in methods}
    cpu_ratios = {m: [] for m in methods}
    for r in range(args.rounds):
        cpu: dict = {}
        best = ratio_run(q, k, v, args.repeats, methods, cpu=cpu)
        line = f"  round {r + 1}: sdpa fp32 {best['sdpa_fp32']:.3f} s (CPU {cpu['sdpa_fp32']:.3f} s)"
        for m in methods:
            ratios[m].append(best[m] / best["sdpa_fp32"])
            cpu_ratios[m].append(cpu[m] / cpu["sdpa_fp32"])
            line += f" | {m} {best[m]:.3f} s ratio {ratios[m][-1]:.3f} (CPU ratio {cpu_ratios[m][-1]:.3f})"
        print(line, flush=True)
    for m in methods:
        for what, rs in (("wall", ratios[m]), ("CPU", cpu_ratios[m])):
            print(
                f"  {m}/sdpa_fp32 ({what}): min {min(rs):.3f}, median {statistics.median(rs):.3f}, max {max(rs):.3f}"
            )
    print(f"  load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
