"""Do the rigorous bounds hold for runs on another device? (CUDA here; any torch device.)

The theorems of docs/bounds.md assume only H1–H3: fp32 accumulation in *some* order, IEEE roundings
and an exponential within its stated error. A GPU runs the same kernel code (``pasa_npu``) with other
summation orders (cuBLAS, its own reductions) and its own ``exp``, so its outputs are a test of the
bounds that the CPU run, whose order the bounds were checked on, is not.

Two steps, so that the device machine only runs kernels:

``run``   (on the machine with the device) runs each method on the 32-cell grid (1 × 7/1 heads of the
          reference shape, S1 = S2 = 1407, d = 128, the reference seed) on ``--device`` and on the CPU,
          and writes to ``--out``: the device's outputs on the certified rows (fp16), the device's
          shifted keys K̃ (PASA), and per cell the device-vs-CPU comparison on all rows (elements that
          differ, max |difference|, max error of each against the float64 golden).
``check`` (anywhere, CPU) certifies the same rows with ``pasa_theory.rigorous.certify`` (any-order
          K̃, and for PASA also with the device's own K̃) and prints, per method, whether every device
          output element lies within its row bound, bound / measured, and the comparison table.

Usage:
    python benchmarks/device_bounds.py run --device cuda --out DIR [--methods ...]
    python benchmarks/device_bounds.py check DIR
    python benchmarks/device_bounds.py run-masked --device cuda --out DIR   (then check-masked DIR): causal
        with GQA, decode, ragged tails, additive and boolean masks
Prints; asserts nothing (``check`` exits 1 if a bound is violated).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = dict(batch=1, heads=7, kv_heads=1, seq_q=1407, seq_kv=1407, head_dim=128)
ROW_STEP = 200
METHODS = ["pasa", "pasa:script", "pasa:fp16_keymean", "fa_qk", "fa_q", "fa_hybrid", "smooth_k"]
PASA_LIKE = ("pasa", "pasa:script", "pasa:fp16_keymean")


def _key(cell: dict) -> str:
    return f"{cell['dist']}_{cell['mean']:g}_{cell['amplitude']:g}"


def _preset(method: str) -> str:
    return method.split(":")[1] if ":" in method else "npu_fp16"


def _cells(limit: int | None):
    from pasa_npu.harness import grid_cells

    for i, c in enumerate(grid_cells(shape=SHAPE, progress=False)):
        if limit is not None and i >= limit:
            return
        yield c


def run(device: str, out: Path, methods: list[str], limit: int | None = None) -> None:
    from pasa_npu.golden import golden_attention
    from pasa_npu.kernel import shifted_keys
    from pasa_npu.methods import run_method

    dev = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    rows = np.arange(0, SHAPE["seq_q"], ROW_STEP)
    outs: dict[str, np.ndarray] = {}
    kts: dict[str, np.ndarray] = {}
    comp = []
    info = dict(torch=torch.__version__, device=str(dev), rows=rows.tolist(), shape=SHAPE)
    if dev.type == "cuda":
        info.update(
            name=torch.cuda.get_device_name(dev),
            allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            fp16_reduced=torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
        )
    t0 = time.perf_counter()
    for cell, q, k, v in _cells(limit):
        gold = golden_attention(q, k, v).numpy()
        qd, kd, vd = q.to(dev), k.to(dev), v.to(dev)
        for m in methods:
            od = run_method(m, qd, kd, vd).cpu()
            oc = run_method(m, q, k, v)
            a, b = od.double().numpy(), oc.double().numpy()
            outs[f"{m}|{_key(cell)}"] = od.numpy()[:, :, rows]
            if m in PASA_LIKE:
                kts[f"{m}|{_key(cell)}"] = shifted_keys(kd, precision=_preset(m)).cpu().numpy()
            comp.append(
                dict(
                    **cell,
                    method=m,
                    differ=float(np.mean(~((a == b) | (np.isnan(a) & np.isnan(b))))),
                    max_diff=float(np.nanmax(np.abs(a - b))),
                    err_device=float(np.nanmax(np.abs(a - gold))),
                    err_cpu=float(np.nanmax(np.abs(b - gold))),
                    finite_device=bool(np.isfinite(a).all()),
                    finite_cpu=bool(np.isfinite(b).all()),
                )
            )
        print(_key(cell), f"{time.perf_counter() - t0:.0f} s", flush=True)
    np.savez_compressed(out / "outputs.npz", **outs)
    for m in methods:  # one file per method (each under the transfer's 16 MiB)
        part = {key: a for key, a in kts.items() if key.startswith(m + "|")}
        if part:
            np.savez_compressed(out / f"shifted_keys_{m.replace(':', '_')}.npz", **part)
    (out / "compare.json").write_text(json.dumps(dict(info=info, cells=comp), indent=1))
    print(json.dumps(info))


def check(src: Path, limit: int | None = None) -> int:
    from pasa_npu.golden import golden_attention
    from pasa_theory import rigorous

    torch.set_num_threads(1)
    outs = np.load(src / "outputs.npz")
    kts: dict[str, np.ndarray] = {}
    for f in src.glob("shifted_keys_*.npz"):
        kts.update(np.load(f))
    meta = json.loads((src / "compare.json").read_text())
    rows = np.array(meta["info"]["rows"])
    print("device run:", meta["info"])
    methods = sorted({k.split("|")[0] for k in outs.files}, key=METHODS.index)
    recs = []
    for cell, q, k, v in _cells(limit):
        if f"{methods[0]}|{_key(cell)}" not in outs.files:
            continue
        gold = golden_attention(q, k, v).numpy()[:, :, rows]
        for m in methods:
            o = outs[f"{m}|{_key(cell)}"].astype(np.float64)
            err = np.abs(o - gold)
            variants = [("any-order", None)]
            if m in PASA_LIKE and m != "pasa:script":
                variants.append(("device K̃", torch.from_numpy(kts[f"{m}|{_key(cell)}"])))
            for label, kt in variants:
                cert = rigorous.certify(m, q, k, v, rows=rows, shifted_keys=kt)
                rowerr = np.nan_to_num(err.max(-1), nan=np.inf)
                holds = bool(np.all(rowerr <= cert.row_bound))
                meas = float(np.nanmax(err))
                recs.append(
                    dict(
                        **cell,
                        method=m,
                        kt=label,
                        holds=holds,
                        measured=meas,
                        bound=cert.max_abs_bound,
                        cap=cert.hull_cap,
                    )
                )
                if not holds:
                    i = np.unravel_index(np.argmax(rowerr - cert.row_bound), rowerr.shape)
                    print(
                        f"VIOLATED {m} {label} {_key(cell)} row {rows[i[2]]}: err {rowerr[i]:.4e} > bound "
                        f"{cert.row_bound[i]:.4e}",
                        flush=True,
                    )
        print(_key(cell), flush=True)
    print("\nmethod             | K̃         | cells | hold | below cap | median b/m | p90 b/m")
    bad = 0
    for m in methods:
        for label in ("any-order", "device K̃"):
            rs = [r for r in recs if r["method"] == m and r["kt"] == label]
            if not rs:
                continue
            bad += sum(not r["holds"] for r in rs)
            ok = [r for r in rs if np.isfinite(r["measured"]) and r["measured"] > 0]
            ratio = np.array([r["bound"] / r["measured"] for r in ok])
            below = np.mean([r["bound"] < r["cap"] for r in ok]) if ok else float("nan")
            print(
                f"{m:18s} | {label:10s} | {len(rs):5d} | {sum(r['holds'] for r in rs):4d} | {below:9.0%} | "
                f"{np.median(ratio):10.3g} | {np.percentile(ratio, 90):7.3g}"
            )
    print(
        "\nmethod             | cells | elements differing device vs CPU (median, max) | max |diff| | "
        "max err device / max err CPU (median, max)"
    )
    for m in methods:
        allc = [c for c in meta["cells"] if c["method"] == m]
        cs = [c for c in allc if c["finite_device"] and c["finite_cpu"]]
        both = sum(not c["finite_device"] and not c["finite_cpu"] for c in allc)
        one = sum(c["finite_device"] != c["finite_cpu"] for c in allc)
        if both or one:
            print(f"{m:18s} | inf/NaN on both devices in {both} cells, on one only in {one}: left out below")
        rat = np.array([c["err_device"] / c["err_cpu"] for c in cs if c["err_cpu"] > 0])
        print(
            f"{m:18s} | {len(cs):5d} | {np.median([c['differ'] for c in cs]):.2%}, "
            f"{max(c['differ'] for c in cs):.2%} | {max(c['max_diff'] for c in cs):.3g} | "
            f"{np.median(rat):.3f}, {rat.max():.3f}"
        )
    return 1 if bad else 0


#: the second set: causal with GQA, decode, ragged tails, additive and boolean masks (seeded on the CPU,
#: so that ``check-masked`` rebuilds the same inputs)
MASKED = [
    dict(name="causal_gqa", dist="uniform", mean=0.0, amp=5.0, heads=8, kv=2, S1=1024, S2=1024, d=128, causal=True),
    dict(name="decode", dist="hybrid", mean=10.0, amp=5.0, heads=8, kv=2, S1=1, S2=4096, d=128),
    dict(name="additive_ragged", dist="uniform", mean=0.0, amp=5.0, heads=4, kv=1, S1=256, S2=1000, d=64,
         mask="additive"),
    dict(name="bool_ragged", dist="hybrid", mean=0.0, amp=5.0, heads=4, kv=2, S1=256, S2=777, d=64, mask="bool"),
    dict(name="causal_long", dist="uniform", mean=10.0, amp=0.5, heads=2, kv=1, S1=512, S2=2048, d=128,
         causal=True),
]  # fmt: skip


def _masked_case(c: dict):
    """(q, k, v, attn_mask, is_causal, rows) of one MASKED case, on the CPU."""
    from pasa_npu import data

    q, k, v = data.make_qkv(
        c["dist"], batch=1, heads=c["heads"], kv_heads=c["kv"], seq_q=c["S1"], seq_kv=c["S2"], head_dim=c["d"],
        mean=c["mean"], amplitude=c["amp"], seed=data.REFERENCE_SEED, dtype=torch.float16,
    )  # fmt: skip
    g = torch.Generator().manual_seed(11)
    mask = None
    if c.get("mask") == "additive":
        mask = 3.0 * torch.randn(1, c["heads"], c["S1"], c["S2"], generator=g, dtype=torch.float64)
        mask[torch.rand(mask.shape, generator=g) < 0.1] = -math.inf
        mask[..., -1] = 0.0  # every row keeps a key
    elif c.get("mask") == "bool":
        mask = torch.rand(1, c["heads"], c["S1"], c["S2"], generator=g) < 0.7
        mask[..., -1] = True
    rows = np.unique(np.linspace(0, c["S1"] - 1, 8).astype(np.int64))
    return q, k, v, mask, bool(c.get("causal", False)), rows


def run_masked(device: str, out: Path, methods: list[str]) -> None:
    from pasa_npu.kernel import shifted_keys
    from pasa_npu.methods import run_method

    dev = torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    outs: dict[str, np.ndarray] = {}
    kts: dict[str, np.ndarray] = {}
    for c in MASKED:
        q, k, v, mask, causal, rows = _masked_case(c)
        md = None if mask is None else mask.to(dev)
        for m in methods:
            od = run_method(m, q.to(dev), k.to(dev), v.to(dev), attn_mask=md, is_causal=causal).cpu()
            outs[f"{m}|{c['name']}"] = od.numpy()[:, :, rows]
            if m in PASA_LIKE and m != "pasa:script":
                kts[f"{m}|{c['name']}"] = shifted_keys(k.to(dev), precision=_preset(m)).cpu().numpy()
        print(c["name"], flush=True)
    np.savez_compressed(out / "masked_outputs.npz", **outs)
    np.savez_compressed(out / "masked_shifted_keys.npz", **kts)
    (out / "masked_info.json").write_text(json.dumps(dict(torch=torch.__version__, device=str(dev))))


def check_masked(src: Path) -> int:
    from pasa_npu.golden import golden_attention
    from pasa_theory import rigorous

    torch.set_num_threads(1)
    outs = np.load(src / "masked_outputs.npz")
    kts = np.load(src / "masked_shifted_keys.npz")
    print("device run:", (src / "masked_info.json").read_text())
    bad = 0
    print("case             | method             | K̃         | holds | bound     | measured  | hull cap")
    for c in MASKED:
        q, k, v, mask, causal, rows = _masked_case(c)
        gold = golden_attention(q, k, v, attn_mask=mask, is_causal=causal).numpy()[:, :, rows]
        for key in [x for x in outs.files if x.endswith("|" + c["name"])]:
            m = key.split("|")[0]
            err = np.abs(outs[key].astype(np.float64) - gold)
            variants = [("any-order", None)] + (
                [("device K̃", torch.from_numpy(kts[key]))] if key in kts.files else []
            )
            for label, kt in variants:
                cert = rigorous.certify(
                    m, q, k, v, rows=rows, attn_mask=mask, is_causal=causal, shifted_keys=kt
                )
                rowerr = np.nan_to_num(err.max(-1), nan=np.inf)
                holds = bool(np.all(rowerr <= cert.row_bound))
                bad += not holds
                print(f"{c['name']:16s} | {m:18s} | {label:10s} | {str(holds):5s} | {cert.max_abs_bound:9.3g} | "
                      f"{float(np.nanmax(err)):9.3g} | {cert.hull_cap:9.3g}", flush=True)  # fmt: skip
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--device", default="cuda")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--methods", nargs="+", default=METHODS)
    r.add_argument("--cells", type=int, default=None, help="only the first N grid cells")
    rm = sub.add_parser("run-masked")
    rm.add_argument("--device", default="cuda")
    rm.add_argument("--out", type=Path, required=True)
    rm.add_argument("--methods", nargs="+", default=METHODS)
    cm = sub.add_parser("check-masked")
    cm.add_argument("src", type=Path)
    c = sub.add_parser("check")
    c.add_argument("src", type=Path)
    c.add_argument("--cells", type=int, default=None, help="only the first N grid cells")
    a = ap.parse_args()
    if a.cmd == "run-masked":
        run_masked(a.device, a.out, a.methods)
    elif a.cmd == "check-masked":
        sys.exit(check_masked(a.src))
    elif a.cmd == "run":
        run(a.device, a.out, a.methods, a.cells)
    else:
        sys.exit(check(a.src, a.cells))


if __name__ == "__main__":
    main()
