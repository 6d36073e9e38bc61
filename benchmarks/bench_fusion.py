"""Where the kernel's time goes, and whether fusing its elementwise steps with torch.compile pays
(``make bench``). Prints; asserts nothing.

1. Op classes of ``pasa`` (npu_fp16) at the reference shape (1 x 28/4 x 1407 x 128, one thread):
   torch.profiler self CPU time per class (matrix products, dtype conversions = roundings and
   widenings, exp, reductions, other elementwise), next to the CPU times of the kernel and of torch
   SDPA fp32 measured interleaved without the profiler.
2. One score tile (4 x 896 x 128, the kernel's tile at that shape): the kernel's eager sequence
   (round S to fp16, keep the rounded tile wide for the block means, row max, S - m, exp, widen P
   for the matrix unit) against the same steps as one ``torch.compile``d (inductor, C++ backend)
   function with ``emulate_precision_casts`` (every fp16 result rounded as eager rounds it); likewise
   the accumulator update O <- fl(fl(a*O) + fl(g*fl(PV))). Interleaved, best of ``--repeats``; the
   outputs compared bit for bit. Compile time: cold (empty inductor cache) and warm (cache hit).
3. exp under inductor against eager exp on every one of the 63,488 finite fp16 inputs, +-inf and NaN,
   at vector-aligned positions and in the loop tails.
4. The matrix products: one tile product (4 x 896 x 128 by 128 x 128, fp32) in the kernel's layout
   (K~ block as a transposed view), with K~ transposed once (contiguous), and as part of a 4-block
   wide product; GFLOP/s, bit-identity of the results, and the time the kernel's 2 x 121 products
   take at that rate compared with the whole of SDPA (the floor of any emulation that keeps them).

Timings are best CPU times of the process (one torch thread); compile times are wall times.

Usage: python benchmarks/bench_fusion.py [--repeats 50] [--skip-profile] [--skip-compile]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

# a fresh inductor cache, so that the first compile below is a cold one (set before torch is imported)
_CACHE = tempfile.TemporaryDirectory(prefix="pasa_bench_inductor_")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", _CACHE.name)

import torch  # noqa: E402

F16, F32 = torch.float16, torch.float32

#: Timings are CPU times of this (one-thread) process, best of N: on a machine shared with other
#: jobs the wall time also measures the scheduler's share of a core. Compile times are wall times.
_clock = time.process_time

CLASSES = {
    "matrix products (bmm/mm)": ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm"),
    "dtype conversions (copy_, to)": ("aten::copy_", "aten::_to_copy"),
    "exp": ("aten::exp", "aten::exp_"),
    "reductions (sum, mean, amax, any)": ("aten::sum", "aten::mean", "aten::amax", "aten::any", "aten::max"),
}


def profile_classes(q, k, v) -> None:
    from torch.profiler import ProfilerActivity, profile

    from pasa_npu import pasa_attention

    q32, k32, v32 = q.float(), k.float(), v.float()
    fns = {
        "pasa": lambda: pasa_attention(q, k, v),
        "sdpa_fp32": lambda: torch.nn.functional.scaled_dot_product_attention(q32, k32, v32, enable_gqa=True),
    }
    for f in fns.values():
        f()
    best = {n: float("inf") for n in fns}
    for _ in range(5):
        for n, f in fns.items():
            t0 = _clock()
            f()
            best[n] = min(best[n], _clock() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fns["pasa"]()
    per_class: dict[str, float] = {c: 0.0 for c in CLASSES}
    per_class["other aten ops (mul, add, sub, where, ...)"] = 0.0
    calls = 0
    for ev in prof.key_averages():
        if not ev.key.startswith("aten::"):
            continue
        calls += ev.count
        for c, names in CLASSES.items():
            if ev.key in names:
                per_class[c] += ev.self_cpu_time_total
                break
        else:
            per_class["other aten ops (mul, add, sub, where, ...)"] += ev.self_cpu_time_total
    total = sum(per_class.values())
    print(
        f"1. Op classes of pasa (npu_fp16), 1x28/4x1407x128, 1 thread; CPU time best of 5, interleaved: "
        f"pasa {best['pasa']:.3f} s, sdpa fp32 {best['sdpa_fp32']:.3f} s, ratio {best['pasa'] / best['sdpa_fp32']:.3f}"
    )
    print(
        f"   one profiled run, {calls} aten calls; share of the profiled aten self time, and that share of "
        f"pasa's CPU time in units of SDPA's (an apportionment: Python time between calls is spread pro rata)"
    )
    for c, us in sorted(per_class.items(), key=lambda kv: -kv[1]):
        print(
            f"   {c:42s} {100 * us / total:5.1f} %   {us / total * best['pasa'] / best['sdpa_fp32']:.2f} x sdpa"
        )


# -- 2. the score tile's chain: eager (the kernel's own sequence) and compiled ------------------------


def eager_chain(s_acc, s_out, p_acc):
    """The kernel's npu_fp16 tile steps without masks (pasa_npu/kernel.py, steps a-d)."""
    s = s_out.copy_(s_acc)  # S~ rounded to fp16
    s_acc.copy_(s)  # the rounded tile, wide again, for the block means
    mj = s_acc.amax(dim=-1, keepdim=True).to(F16)  # row max
    p = torch.exp_(torch.sub(s, mj, out=s))  # fl(exp(fl(S - m)))
    p_acc.copy_(p)  # P as a matrix-unit operand
    return mj


def fused_chain(s_acc, s_out, p_acc):
    s = s_acc.to(F16).to(F32)
    mj = s.amax(dim=-1, keepdim=True)
    p = torch.exp((s - mj).to(F16).to(F32)).to(F16)
    s_acc.copy_(s)
    s_out.copy_(p)
    p_acc.copy_(p.to(F32))
    return mj.to(F16)


def eager_update(o, pv_acc, alpha, gamma, pv_out, o_in):
    pv = pv_out.copy_(pv_acc)
    torch.mul(gamma, pv, out=o_in)
    o.mul_(alpha).add_(o_in)


def fused_update(o, pv_acc, alpha, gamma):
    pv = pv_acc.to(F16).to(F32)
    o_in = (gamma.to(F32) * pv).to(F16).to(F32)
    o.copy_(((alpha.to(F32) * o.to(F32)).to(F16).to(F32) + o_in).to(F16))


def _rotated(fns: dict, i: int) -> list:
    """The items of ``fns`` starting at the i-th (mod len): no variant always runs first or last."""
    items = list(fns.items())
    i %= len(items)
    return items[i:] + items[:i]


def _compile(fn):
    return torch.compile(fn, dynamic=False, fullgraph=True, options={"emulate_precision_casts": True})


def _same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    ints = {F16: torch.int16, F32: torch.int32}
    return x.dtype == y.dtype and torch.equal(x.view(ints[x.dtype]), y.view(ints[y.dtype]))


def compare_tile(q, k, repeats: int) -> None:
    from pasa_npu.kernel import shifted_keys

    # a real tile: the first 128 query rows of each GQA group against the first shifted key block
    shape = (1, 4, 896, 128)  # (B, Hkv, G*block_q, n) at the reference shape
    qi = q[:, :, :128].reshape(shape).float()
    s0 = torch.matmul(qi, shifted_keys(k)[:, :, :128].float().transpose(-1, -2))
    g = torch.Generator().manual_seed(0)
    pv0 = (torch.rand(shape, generator=g) * 60).half().float()
    a0 = torch.exp(-torch.rand((*shape[:-1], 1), generator=g) * 2).half()
    g0 = torch.exp(-torch.rand((*shape[:-1], 1), generator=g) * 2).half()
    o0 = (torch.rand(shape, generator=g) * 500).half()

    t0 = time.perf_counter()
    cchain = _compile(fused_chain)
    bufs_c = (s0.clone(), torch.empty(shape, dtype=F16), torch.empty(shape))
    mj_c = cchain(*bufs_c)
    cold = time.perf_counter() - t0
    cupdate = _compile(fused_update)
    o_c = o0.clone()
    cupdate(o_c, pv0, a0, g0)
    torch._dynamo.reset()
    t0 = time.perf_counter()
    cchain = _compile(fused_chain)
    cchain(s0.clone(), torch.empty(shape, dtype=F16), torch.empty(shape))
    warm = time.perf_counter() - t0
    cupdate = _compile(fused_update)
    cupdate(o0.clone(), pv0, a0, g0)

    bufs_e = (s0.clone(), torch.empty(shape, dtype=F16), torch.empty(shape))
    mj_e = eager_chain(*bufs_e)
    o_e = o0.clone()
    eager_update(o_e, pv0, a0, g0, torch.empty(shape, dtype=F16), torch.empty(shape, dtype=F16))
    same_chain = _same_bits(mj_c, mj_e) and all(_same_bits(x, y) for x, y in zip(bufs_c, bufs_e))
    same_update = _same_bits(o_c, o_e)

    s_work = s0.clone()
    s_out, p_acc = torch.empty(shape, dtype=F16), torch.empty(shape)
    pv_out, o_in, o_work = torch.empty(shape, dtype=F16), torch.empty(shape, dtype=F16), o0.clone()
    fns = {
        "chain, eager": lambda: eager_chain(s_work, s_out, p_acc),
        "chain, compiled": lambda: cchain(s_work, s_out, p_acc),
        "update, eager": lambda: eager_update(o_work, pv0, a0, g0, pv_out, o_in),
        "update, compiled": lambda: cupdate(o_work, pv0, a0, g0),
    }
    best = {n: float("inf") for n in fns}
    for i in range(repeats):
        for n, f in _rotated(fns, i):
            s_work.copy_(s0)
            o_work.copy_(o0)
            t0 = _clock()
            f()
            best[n] = min(best[n], _clock() - t0)
    print(
        f"\n2. One score tile {tuple(shape)}, 1 thread, best of {repeats}, interleaved "
        f"(the kernel runs 121 such tiles at the reference shape)"
    )
    for part in ("chain", "update"):
        e, c = best[f"{part}, eager"], best[f"{part}, compiled"]
        print(f"   {part:6s}: eager {e * 1e3:.3f} ms, compiled {c * 1e3:.3f} ms, compiled/eager {c / e:.2f}")
    print(f"   bit-identical to eager: chain {same_chain}, update {same_update}")
    print(f"   compile time of the chain: cold {cold:.1f} s, warm (inductor cache hit) {warm:.1f} s")


# -- 3. exp: inductor against eager on every fp16 input ------------------------------------------------


def compare_exp() -> None:
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    x = bits.view(F16)
    finite = torch.isfinite(x)
    eager = torch.exp(x)

    def fexp(t):
        return torch.exp(t.to(F32)).to(F16)

    cexp = _compile(fexp)
    results = []
    for name, inp, ref in (
        ("aligned, 65536 inputs", x, eager),
        ("offset by one element", x[1:], eager[1:]),
        ("length 65536 + 7 (tail)", torch.cat((x, x[:7])), torch.cat((eager, eager[:7]))),
    ):
        got = cexp(inp)
        nan_both = torch.isnan(got) & torch.isnan(ref)
        diff = (got.view(torch.int16) != ref.view(torch.int16)) & ~nan_both
        results.append((name, int(diff.sum())))
    print(
        f"\n3. exp, inductor vs eager, all {int(finite.sum())} finite fp16 inputs plus +-inf and NaN "
        f"(1024 payloads each sign): differing outputs"
    )
    for name, nd in results:
        print(f"   {name:26s} {nd}")


def compare_matmul(q, k, v, repeats: int) -> None:
    from pasa_npu.kernel import shifted_keys

    shape = (1, 4, 896, 128)
    qi = q[:, :, :128].reshape(shape).float()
    kt = shifted_keys(k).float()  # (1, 4, 1408, 128)
    kt_t = kt.transpose(-1, -2).contiguous()  # (1, 4, 128, 1408)
    out, out4 = torch.empty(shape), torch.empty((*shape[:-1], 512))
    ref = torch.matmul(qi, kt[:, :, :128].transpose(-1, -2))
    fns = {
        "transposed view (kernel)": lambda: torch.matmul(qi, kt[:, :, :128].transpose(-1, -2), out=out),
        "K~ transposed once": lambda: torch.matmul(qi, kt_t[:, :, :, :128], out=out),
        "4 blocks in one product": lambda: torch.matmul(qi, kt[:, :, :512].transpose(-1, -2), out=out4),
    }
    same = {
        "transposed view (kernel)": True,
        "K~ transposed once": _same_bits(torch.matmul(qi, kt_t[:, :, :, :128]), ref),
        "4 blocks in one product": _same_bits(
            torch.matmul(qi, kt[:, :, :512].transpose(-1, -2))[..., :128], ref
        ),
    }
    best = {n: float("inf") for n in fns}
    for i in range(repeats):
        for n, f in _rotated(fns, i):
            t0 = _clock()
            f()
            best[n] = min(best[n], _clock() - t0)
    flops = 2 * 4 * 896 * 128 * 128
    print(f"\n4. Tile products (4 x 896 x 128 by 128 x 128 per block, fp32), 1 thread, best of {repeats}")
    for n, t in best.items():
        per_block = t / (4 if n.startswith("4 blocks") else 1)
        print(
            f"   {n:26s} {per_block * 1e3:.3f} ms per block, {flops / per_block / 1e9:5.1f} GFLOP/s, "
            f"bit-identical {same[n]}"
        )
    rate = flops / best["transposed view (kernel)"]
    total = 2 * 2 * 28 * 1407 * 1407 * 128  # Q.K^T and P.V at the reference shape
    q32, k32, v32 = q.float(), k.float(), v.float()
    sdpa = float("inf")
    for _ in range(5):
        t0 = _clock()
        torch.nn.functional.scaled_dot_product_attention(q32, k32, v32, enable_gqa=True)
        sdpa = min(sdpa, _clock() - t0)
    print(
        f"   the kernel's two products at that rate: {total / rate:.3f} s; all of SDPA fp32 (best of 5): "
        f"{sdpa:.3f} s; products / SDPA {total / rate / sdpa:.2f}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--skip-profile", action="store_true")
    p.add_argument("--skip-compile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}")
    from pasa_npu import data

    q, k, v = data.make_qkv("uniform", mean=30.0, amplitude=0.5, **data.REFERENCE_SHAPE)
    if not args.skip_profile:
        profile_classes(q, k, v)
    if not args.skip_compile:
        try:
            compare_tile(q, k, args.repeats)
            compare_exp()
        except Exception as exc:  # no working compiler: say so, the rest of make bench goes on
            print(f"\n2./3. torch.compile unavailable here: {type(exc).__name__}: {exc}")
    compare_matmul(q, k, v, args.repeats)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
