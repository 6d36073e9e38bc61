"""Speed and memory of the tiled kernels (``make bench``). Prints figures; asserts nothing.

1. Reference shape (1 x 28/4 heads, S1 = S2 = 1407, d = 128, fp16 inputs): best-of-N wall time of
   each method and its ratio to torch SDPA in fp32 on the same inputs, measured in the same run,
   plus the once-per-call cost of the shift K̃ = M·K (design decision D10).
2. Long sequence (1 x 28/4 x 32768 x 128 by default): PASA npu_fp16 in a fresh subprocess, wall time
   and peak resident memory (ru_maxrss of that process, data generation included).

Usage: python benchmarks/bench_speed_memory.py [--repeats 5] [--long-seq 32768] [--skip-long] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import textwrap
import time

import torch


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (caches, lazily solved beta)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def reference_shape(repeats: int) -> list[dict]:
    from pasa_npu import data
    from pasa_npu.kernel import shifted_keys
    from pasa_npu.methods import run_method

    q, k, v = data.make_qkv("uniform", mean=30.0, amplitude=0.5, **data.REFERENCE_SHAPE)
    q32, k32, v32 = q.float(), k.float(), v.float()
    sdpa = _best(
        lambda: torch.nn.functional.scaled_dot_product_attention(q32, k32, v32, enable_gqa=True), repeats
    )
    rows = [dict(method="sdpa fp32 (baseline)", seconds=sdpa, ratio=1.0)]
    for name in (
        "pasa",
        "pasa:fp16_keymean",
        "pasa:script",
        "fa_qk",
        "fa_q",
        "fa_hybrid",
        "smooth_k",
        "pasa:bf16",
    ):
        t = _best(lambda name=name: run_method(name, q, k, v), repeats)
        rows.append(dict(method=name, seconds=t, ratio=t / sdpa))
    t = _best(lambda: shifted_keys(k), repeats)
    rows.append(dict(method="  of which K~ = M K (once per call)", seconds=t, ratio=t / sdpa))
    return rows


_LONG = textwrap.dedent("""
    import json, resource, sys, time, torch
    from pasa_npu import data, pasa_attention, metrics
    S = int(sys.argv[1])
    q, k, v = data.make_qkv("uniform", batch=1, heads=28, kv_heads=4, seq_q=S, seq_kv=S, head_dim=128,
                            mean=30.0, amplitude=0.5)
    t0 = time.perf_counter()
    with metrics.census() as c:
        out = pasa_attention(q, k, v)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(seconds=dt, peak_rss_bytes=rss, nonfinite=c.total, finite=bool(torch.isfinite(out).all()))))
""")


def long_sequence(seq: int) -> dict:
    res = subprocess.run([sys.executable, "-c", _LONG, str(seq)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--long-seq", type=int, default=32768)
    p.add_argument("--skip-long", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    info = dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        machine=platform.machine(),
        processor=platform.processor() or "unknown",
    )
    print(f"torch {info['torch']}, {info['threads']} threads, {info['machine']}")
    print("\nReference shape 1x28/4x1407x128, fp16 inputs, best of", args.repeats)
    rows = reference_shape(args.repeats)
    w = max(len(r["method"]) for r in rows)
    print(f"{'method'.ljust(w)}  time [s]  ratio to SDPA fp32")
    for r in rows:
        print(f"{r['method'].ljust(w)}  {r['seconds']:8.3f}  {r['ratio']:6.2f}")
    result = dict(environment=info, reference_shape=rows)
    if not args.skip_long:
        print(f"\nLong sequence 1x28/4x{args.long_seq}x128, PASA npu_fp16, fresh process")
        lr = long_sequence(args.long_seq)
        print(
            f"time {lr['seconds']:.1f} s, peak RSS {lr['peak_rss_bytes'] / 2**30:.2f} GiB, "
            f"non-finite values {lr['nonfinite']}, output finite: {lr['finite']}"
        )
        result["long_sequence"] = dict(lr, seq=args.long_seq)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\n(peak RSS of this process: {own / 2**30:.2f} GiB)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
