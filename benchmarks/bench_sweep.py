"""Sweep throughput and long-sequence scaling (``make bench``). Prints figures; asserts nothing.

1. Throughput of one 64-point sweep (2 distributions x 4 means x 2 amplitudes x 4 methods, 1 x 4/1
   heads, S1 = 512, S2 = 1407, d = 128) under ``serial``, ``processes`` (joblib, 2 workers) and
   ``dask`` (LocalCluster, 2 worker processes), measured in the same run, start-up of the pool or
   cluster included; the three datasets are compared (equal apart from timing columns).
2. Kernel vs SDPA fp32 at the reference shape (``bench_kernel.py``, interleaved, best of N).
3. Long sequences: PASA npu_fp16 on 1 x 28/4 x S x 128 (S1 = S2 = S = 1k, 2k, ... ``--max-seq``),
   each in a fresh process with one torch thread: wall and CPU time of the kernel (after a small
   warm-up call that resolves β), the peak RSS of the process (data generation included) and the
   load average. Fitted: CPU time ~ a·S^p (p should be near 2) and RSS ~ b + c·S (linear: O(S·d)
   memory), extrapolated to S = 128k (an extrapolation, not a run).

Usage: python benchmarks/bench_sweep.py [--max-seq 32768] [--skip-throughput] [--skip-kernel]
       [--skip-long] [--workers 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

THROUGHPUT_SPEC = {
    "sweep": {"name": "throughput64"},
    "defaults": {"batch": 1, "heads": 4, "kv_heads": 1, "seq_q": 512, "seq_kv": 1407, "head_dim": 128},
    "grid": {
        "dist": ["uniform", "hybrid"],
        "mean": [0.0, 10.0, 20.0, 30.0],
        "amplitude": [0.5, 20.0],
        "method": ["pasa", "pasa:script", "fa_qk", "sdpa"],
    },
}


def throughput(workers: int) -> list[dict]:
    from pasa_npu import sweep

    points = sweep.parse_spec(THROUGHPUT_SPEC).points()
    assert len(points) == 64
    rows, frames = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("serial", "processes", "dask"):
            out = Path(tmp) / executor
            msgs: list[str] = []
            t0 = time.perf_counter()
            s = sweep.run(points, out, executor=executor, workers=workers, progress=False, log=msgs.append)
            dt = time.perf_counter() - t0
            frames[executor] = sweep.load(out)
            rows.append(
                dict(
                    executor=executor if executor == "serial" else f"{executor}({workers})",
                    points=s.ran,
                    failed=s.failed,
                    seconds=dt,
                    points_per_minute=60 * s.ran / dt,
                    note="; ".join(m for m in msgs if "dashboard" in m),
                )
            )
        timing = ["wall_s", "peak_rss_bytes", "seconds", "pred_seconds"]
        base = frames["serial"].drop(columns=timing)
        same = all(frames[e].drop(columns=timing).equals(base) for e in ("processes", "dask"))
    for r in rows:
        r["identical_to_serial"] = same
    return rows


_LONG = textwrap.dedent("""
    import json, resource, sys, time, torch
    torch.set_num_threads(1)
    from pasa_npu import data, pasa_attention, metrics
    S = int(sys.argv[1])
    q, k, v = data.make_qkv("uniform", batch=1, heads=28, kv_heads=4, seq_q=S, seq_kv=S, head_dim=128,
                            mean=30.0, amplitude=0.5)
    pasa_attention(q[:, :, :16], k[:, :, :256], v[:, :, :256])  # one-time set-up (beta, constants) off the clock
    t0, c0 = time.perf_counter(), time.process_time()
    with metrics.census() as c:
        out = pasa_attention(q, k, v)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(seconds=dt, cpu_seconds=cpu, peak_rss_bytes=rss, nonfinite=c.total,
                          finite=bool(torch.isfinite(out).all()))))
""")


def long_sequence(seq: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", _LONG, str(seq)], capture_output=True, text=True, check=True, env=env
    )
    return dict(json.loads(res.stdout.strip().splitlines()[-1]), seq=seq)


def _fit_power(xs, ys) -> tuple[float, float]:
    """Least squares of log y = log a + p log x; returns (a, p)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    p = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
    return math.exp(my - p * mx), p


def _fit_line(xs, ys) -> tuple[float, float]:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    c = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    return my - c * mx, c


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--max-seq", type=int, default=32768, help="longest S of the scaling table (powers of two from 1024)"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7, help="best-of for the kernel/SDPA ratio")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-kernel", action="store_true")
    p.add_argument("--skip-long", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    import torch

    result: dict = dict(torch=torch.__version__, cpus=os.cpu_count())
    if not args.skip_throughput:
        print(
            f"1. Sweep throughput, 64 points (1x4/1 heads, S1 = 512, S2 = 1407, d = 128), {args.workers} workers where parallel",
            flush=True,
        )
        rows = throughput(args.workers)
        print(f"   {'executor':14} {'points':>6} {'failed':>6} {'time [s]':>9} {'points/min':>11}")
        for r in rows:
            print(
                f"   {r['executor']:14} {r['points']:6d} {r['failed']:6d} {r['seconds']:9.1f} {r['points_per_minute']:11.1f}"
            )
        print(
            f"   identical datasets (timing columns aside): {rows[0]['identical_to_serial']}; "
            f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes slow the parallel runs)"
        )
        for r in rows:
            if r["note"]:
                print(f"   {r['note']}")
        result["throughput"] = rows
    if not args.skip_kernel:
        sys.path.insert(0, str(HERE))
        import bench_kernel

        from pasa_npu import data

        torch.set_num_threads(1)
        q, k, v = data.make_qkv("uniform", mean=30.0, amplitude=0.5, **data.REFERENCE_SHAPE)
        ratios = []
        for _ in range(3):
            best = bench_kernel.ratio_run(q, k, v, args.repeats)
            ratios.append(best["pasa"] / best["sdpa_fp32"])
        print(
            f"\n2. PASA npu_fp16 / SDPA fp32 at 1x28/4x1407x128, 1 thread, best of {args.repeats}, interleaved, "
            f"3 rounds: {', '.join(f'{r:.3f}' for r in ratios)}",
            flush=True,
        )
        result["kernel_ratio"] = ratios
    if not args.skip_long:
        seqs = [s for s in (1024 * 2**i for i in range(8)) if s <= args.max_seq]
        print("\n3. Long sequences, PASA npu_fp16, 1x28/4xSxS x128, fresh process, 1 thread", flush=True)
        print(
            f"   {'S':>6} {'wall [s]':>9} {'CPU [s]':>9} {'peak RSS [MiB]':>15} {'nonfinite':>9} {'load avg':>8}"
        )
        rows = []
        for s in seqs:
            try:
                r = long_sequence(s)
            except subprocess.CalledProcessError as exc:  # e.g. SIGKILL from the OOM killer
                print(
                    f"   {s:6d} failed: exit status {exc.returncode}; {exc.stderr.strip()[-200:]}", flush=True
                )
                result.setdefault("long_sequence_failed", []).append(dict(seq=s, returncode=exc.returncode))
                break
            r["load_average"] = os.getloadavg()[0]
            rows.append(r)
            print(
                f"   {s:6d} {r['seconds']:9.2f} {r['cpu_seconds']:9.2f} {r['peak_rss_bytes'] / 2**20:15.0f} "
                f"{r['nonfinite']:9d} {r['load_average']:8.1f}",
                flush=True,
            )
        result["long_sequence"] = rows
        big = [r for r in rows if r["seq"] >= 4096] or rows
        if len(big) >= 2:
            # CPU time of the process: on a shared machine the wall time measures the share of a core
            # the scheduler gave it as much as the kernel; the CPU time is the kernel's own work
            a, pw = _fit_power([r["seq"] for r in big], [r["cpu_seconds"] for r in big])
            b, c = _fit_line([r["seq"] for r in rows], [r["peak_rss_bytes"] for r in rows])
            s128 = 131072
            print(
                f"   fit (S >= 4096): CPU time ~ S^{pw:.2f}; RSS ~ {b / 2**20:.0f} MiB + {c * 1024 / 2**20:.1f} MiB per 1k of S"
            )
            t128 = a * s128**pw
            t128_sq = big[-1]["cpu_seconds"] * (s128 / big[-1]["seq"]) ** 2
            print(
                f"   extrapolated to S = 128k: CPU time {t128:.0f} s with the fitted exponent, "
                f"{t128_sq:.0f} s ({t128_sq / 3600:.1f} h) with S^2 from S = {big[-1]['seq']}; "
                f"peak RSS {(b + c * s128) / 2**30:.2f} GiB"
            )
            result["extrapolation_128k"] = dict(
                exponent=pw, cpu_seconds_fit=t128, cpu_seconds_s2=t128_sq, peak_rss_bytes=b + c * s128
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
