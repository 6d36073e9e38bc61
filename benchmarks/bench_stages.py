"""Where `pasa` (npu_fp16) spends its time at the reference shape, stage by stage (``make bench``).

Prints; asserts nothing. One torch thread; every item is timed interleaved with torch SDPA fp32 in the
same run (best of ``--repeats``, wall and CPU time of the process) and given as a ratio to it:

* ``pasa`` with the fused CPU backend and ``pasa@eager`` with it switched off (the torch passes);
* the stages of the fused kernel's 121 tiles, each replayed on its own with the kernel's shapes (one
  (batch, KV head) group of 896 query rows × one KV block of 128 per call, 4 groups per tile):
  the product S = Q·K̃ᵀ, the fused score chain, the product P·V, the fused step (bookkeeping and O);
* ``one-call tiles``: the 121 tiles as the kernel runs them by default (``pasa_tile``: the four stages
  of all 4 groups in one C call, both products by torch's own sgemm), replayed on one tile;
* ``pasa@loop``: the kernel with the Python tile loop instead (torch.matmul and one C call per stage);
* ``rest``: ``pasa`` minus the four stages (Python, set-up, the tile loop's own calls, cache misses
  between stages that the isolated replays do not pay); ``rest (one-call)``: ``pasa`` minus the
  one-call tiles (set-up and Python outside the tiles).

Usage: python benchmarks/bench_stages.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from pasa_npu import _fused, data, kernel
    from pasa_npu.methods import run_method

    fz = _fused.get_backend()
    print(f"stages of pasa (npu_fp16), reference shape, 1 thread, best of {args.repeats}, interleaved")
    print(f"  vector passes: {_fused.fused_backend()}")
    q, k, v = data.make_qkv("uniform", mean=30.0, amplitude=0.5, **data.REFERENCE_SHAPE)
    q32, k32, v32 = q.float(), k.float(), v.float()
    fns = {
        "sdpa_fp32": lambda: torch.nn.functional.scaled_dot_product_attention(q32, k32, v32, enable_gqa=True),
        "pasa": lambda: run_method("pasa", q, k, v),
    }

    def eager():
        with _fused.disabled():
            run_method("pasa", q, k, v)

    fns["pasa@eager"] = eager

    def loop():
        with _fused.python_loop():
            run_method("pasa", q, k, v)

    fns["pasa@loop"] = loop
    if fz is not None:
        hkv, g, s, d, n = 4, 7, 1407, 128, 128
        rows, t_blocks, tiles = g * 128, -(-s // n), 121
        qi = q.view(1, hkv, g, s, d)[:, :, :, :128].reshape(hkv, rows, d).float()
        kt = kernel.shifted_keys(k).float().view(hkv, t_blocks * n, d)
        va = torch.nn.functional.pad(v, (0, 0, 0, t_blocks * n - s)).float().view(hkv, t_blocks, n, d)
        s_acc, p_acc, pv = torch.empty(1, rows, n), torch.empty(1, 1, rows, n), torch.empty(1, 1, rows, d)
        stat = (1, 1, rows, 1, 1)
        outs = (torch.empty(stat, dtype=torch.half), torch.empty(stat, dtype=torch.half), torch.empty(stat))
        torch.matmul(qi[:1], kt[:1, :n].transpose(-1, -2), out=s_acc)
        mj, lj, mean = fz.chain(s_acc, (1, 1, rows, 1, n), None, True, False, p_acc, outs)
        m = torch.full((rows, 1), float("-inf"), dtype=torch.half)
        lsum, a, phi = torch.zeros_like(m), torch.empty_like(m), torch.zeros_like(m)
        o, o2 = torch.zeros(1, rows, d, dtype=torch.half), torch.empty(1, rows, d, dtype=torch.half)
        consts = (torch.tensor(0.5, dtype=torch.half), torch.tensor(16.0, dtype=torch.half), 16384.0)

        def qk():
            for t in range(tiles):
                for h in range(hkv):
                    j = t % t_blocks
                    torch.matmul(
                        qi[h : h + 1], kt[h : h + 1, j * n : (j + 1) * n].transpose(-1, -2), out=s_acc
                    )

        def chain():
            for _ in range(tiles * hkv):
                fz.chain(s_acc, (1, 1, rows, 1, n), None, True, False, p_acc, outs)

        def pv_product():
            for t in range(tiles):
                for h in range(hkv):
                    j = t % t_blocks
                    torch.matmul(p_acc, va[h : h + 1, j : j + 1], out=pv)

        def step():
            for i in range(tiles * hkv):
                fz.step(1, i == 0, False, 0, (mj, lj, mean, pv), consts, (m, lsum, a, phi), None, o, o2)

        fns.update({"S = Q.K~^T": qk, "score chain": chain, "P.V": pv_product, "step (bookkeeping, O)": step})
        if _fused.direct():
            state = (
                torch.full((hkv * rows,), float("-inf"), dtype=torch.half),
                torch.zeros(hkv * rows, dtype=torch.half),
            )
            state += (
                torch.empty(hkv * rows, dtype=torch.half),
                torch.zeros(hkv * rows, dtype=torch.half),
                None,
            )
            ob = (torch.zeros(hkv * rows, d, dtype=torch.half), torch.empty(hkv * rows, d, dtype=torch.half))
            f32 = torch.float32
            bufs = (
                torch.empty(rows * n),
                torch.empty(rows * n),
                torch.empty(rows * d),
                torch.empty(rows, dtype=f32),
            )
            bufs += (torch.empty(rows, dtype=torch.half), torch.empty(rows, dtype=torch.half))
            bufs += (torch.empty(6 * rows + 2 * hkv * rows),)
            dims = [hkv, rows, d, d, n, t_blocks * n * d, t_blocks * n * d, n, 0, 0, 1, 0, 1, 1, 0, 1]
            dims += [fz.lanes, fz.pairing, fz.chunk(rows)]
            tconsts = (0.0, _fused._bits16(consts[0]), _fused._bits16(consts[1]), 16384.0)
            assert fz.gemm_matches(rows, n, d, d, fz.chunk(rows))

            def one_call():
                for t in range(tiles):
                    j = t % t_blocks
                    kt_ptr = kt.data_ptr() + j * n * d * 4
                    v_ptr = va.data_ptr() + j * n * d * 4
                    fz.tile(dims, tconsts, qi, kt_ptr, v_ptr, state, ob, bufs)

            fns["one-call tiles"] = one_call
    for fn in fns.values():
        fn()
    wall = {name: float("inf") for name in fns}
    cpu = dict(wall)
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    if fz is not None:
        parts = ("S = Q.K~^T", "score chain", "P.V", "step (bookkeeping, O)")
        wall["rest"] = wall["pasa"] - sum(wall[x] for x in parts)
        cpu["rest"] = cpu["pasa"] - sum(cpu[x] for x in parts)
        if "one-call tiles" in wall:
            wall["rest (one-call)"] = wall["pasa"] - wall["one-call tiles"]
            cpu["rest (one-call)"] = cpu["pasa"] - cpu["one-call tiles"]
    print(f"  {'item':24s} {'wall':>8s} {'/ sdpa':>7s} {'CPU':>8s} {'/ sdpa':>7s}")
    for name in wall:
        print(
            f"  {name:24s} {wall[name]:8.3f} {wall[name] / wall['sdpa_fp32']:7.3f} "
            f"{cpu[name]:8.3f} {cpu[name] / cpu['sdpa_fp32']:7.3f}"
        )
    print(f"  load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
