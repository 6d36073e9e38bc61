"""The methods of the verification harness, by name.

A method is an *arrangement* of attention; the run's ``precision`` (a preset or
:class:`~pasa_npu.Precision`, default ``npu_fp16``) says in which format it computes. Every method
takes BNSD ``q, k, v`` and the same keyword arguments. Names (also the names
:func:`pasa_theory.predict` accepts):

``pasa``            PASA at the run's precision.
``pasa:<preset>``   PASA at a named preset, e.g. ``pasa:script`` (the public script's numerics).
``fa_qk``           flash attention with QKᵀ rounded to the matmul output format *before* the scale
                    is applied (the vendor high-performance arrangement; in fp16 it overflows once
                    |q·k| > 65504).
``fa_q``            flash attention with Q pre-scaled by τ on the vector unit.
``fa_naive``        untiled softmax attention, Q pre-scaled: the same-precision naive baseline of the
                    FlashAttention accuracy rule (``fa_q`` with a single KV block).
``fa_hybrid``       flash attention with scores and vector unit widened to at least fp32 (operands
                    stay in the run's matmul format).
``smooth_k``        SageAttention-style global K smoothing: K − mean_seq(K) in the vector format, then
                    ``fa_qk``.
``sdpa``            ``torch.nn.functional.scaled_dot_product_attention`` on inputs cast to the run's
                    matmul format.
``npu_fia_ip0``     ``torch_npu.npu_fused_infer_attention_score``, ``inner_precise=0`` (high precision).
``npu_fia_ip1``     the same with ``inner_precise=1`` (high performance). NPU only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pasa_theory import policies

from . import _checks
from .device import import_torch_npu
from .kernel import flash_attention, pasa_attention
from .precision import PRESETS, Precision, get_precision, precision_from_fields

__all__ = [
    "Method",
    "METHODS",
    "get_method",
    "run_method",
    "method_names",
    "DEFAULT_METHODS",
    "npu_fia_kwargs",
]


@dataclass(frozen=True)
class Method:
    """A named attention method of the harness."""

    name: str
    description: str
    fn: Callable[..., torch.Tensor]
    npu_only: bool = False
    #: the Precision the method runs at, or None if it is not one of ours (SDPA, vendor kernels)
    precision: Callable[[Precision], Precision | None] = lambda p: None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
        return self.fn(q, k, v, **kw)


def _arranged(method: str) -> Callable[[Precision], Precision]:
    """The Precision ``method`` runs at, given the run's: the arrangement described once, torch-free, by
    :func:`pasa_theory.policies.arranged_fields` (which the error model reads too)."""

    def prec_of(p: Precision) -> Precision:
        return precision_from_fields(policies.arranged_fields(method, p)[0])

    return prec_of


def _fa(method: str) -> Callable[..., torch.Tensor]:
    prec_of = _arranged(method)
    untiled = bool(policies.arranged_fields(method)[1].get("untiled"))

    def run(
        q, k, v, *, precision, scale=None, is_causal=False, attn_mask=None, block_kv=128, out_dtype=None, **_
    ):
        block = k.shape[2] if untiled else block_kv
        return flash_attention(
            q,
            k,
            v,
            scale=scale,
            block_kv=block,
            is_causal=is_causal,
            attn_mask=attn_mask,
            precision=prec_of(get_precision(precision)),
            out_dtype=out_dtype,
        )

    return run


def _pasa(preset: str | None) -> Callable[..., torch.Tensor]:
    def run(
        q,
        k,
        v,
        *,
        precision,
        scale=None,
        beta=None,
        block_q=128,
        block_kv=128,
        is_causal=False,
        attn_mask=None,
        out_dtype=None,
    ):
        return pasa_attention(
            q,
            k,
            v,
            scale=scale,
            beta=beta,
            block_q=block_q,
            block_kv=block_kv,
            is_causal=is_causal,
            attn_mask=attn_mask,
            precision=preset if preset is not None else precision,
            out_dtype=out_dtype,
        )

    return run


def _smooth_k(
    q, k, v, *, precision, scale=None, is_causal=False, attn_mask=None, block_kv=128, out_dtype=None, **_
):
    # Subtract the per-head sequence mean of K (a constant shift of every score row, which softmax
    # ignores), in fp16 with the mean rounded once, then fp16 flash attention.
    prec = _arranged("smooth_k")(get_precision(precision))
    k16 = k.to(prec.vector)
    mean = k16.mean(dim=2, keepdim=True)
    return flash_attention(
        q,
        k16 - mean,
        v,
        scale=scale,
        block_kv=block_kv,
        is_causal=is_causal,
        attn_mask=attn_mask,
        precision=prec,
        out_dtype=out_dtype or q.dtype,
    )


def _sdpa(q, k, v, *, precision, scale=None, is_causal=False, attn_mask=None, out_dtype=None, **_):
    sh = _checks.check_qkv(q, k, v)
    out_dtype = _checks.check_out_dtype(out_dtype, q.dtype)
    dt = get_precision(precision).matmul_in
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    mask = _checks.check_mask(attn_mask, is_causal, sh, q.device)
    if is_causal:  # SDPA's is_causal is top-left aligned; pass the package's bottom-right rule
        mask = _checks.causal_keep(
            torch.arange(sh.seq_q, device=q.device),
            torch.arange(sh.seq_kv, device=q.device),
            sh.seq_q,
            sh.seq_kv,
        )
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=_checks.check_scale(scale, sh.head_dim), enable_gqa=sh.group > 1
    )
    return out.to(out_dtype)


def npu_fia_kwargs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    inner_precise: int,
    scale: float | None = None,
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
) -> dict:
    """Keyword arguments for ``torch_npu.npu_fused_infer_attention_score`` equivalent to our call.

    BNSD layout, GQA through ``num_key_value_heads``; masks inverted to the vendor's convention
    (True = masked); bottom-right causal as ``sparse_mode=3`` with its fixed 2048 x 2048 triangle.
    The reference script's setting is ``sparse_mode=0``, ``pre_tokens = next_tokens = 65535``.
    """
    if inner_precise not in (0, 1):
        raise ValueError(f"inner_precise must be 0 or 1, got {inner_precise!r}")
    sh = _checks.check_qkv(q, k, v)
    mask = _checks.check_mask(attn_mask, is_causal, sh, q.device)
    kwargs: dict = dict(
        num_heads=sh.heads,
        num_key_value_heads=sh.kv_heads,
        input_layout="BNSD",
        scale=_checks.check_scale(scale, sh.head_dim),
        inner_precise=inner_precise,
        pre_tokens=65535,
        next_tokens=65535,
        sparse_mode=0,
    )
    if is_causal:
        kwargs.update(
            sparse_mode=3,
            pre_tokens=2147483647,
            next_tokens=0,
            atten_mask=torch.triu(torch.ones(2048, 2048, dtype=torch.bool, device=q.device), diagonal=1),
        )
    elif mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError("the npu_fia methods take boolean masks only")
        kwargs["atten_mask"] = ~mask.expand(sh.batch, sh.heads, sh.seq_q, sh.seq_kv)
    return kwargs


def _on_npu(t: torch.Tensor) -> bool:
    return t.device.type == "npu"


def _npu_fia(inner_precise: int) -> Callable[..., torch.Tensor]:
    def run(q, k, v, *, scale=None, is_causal=False, attn_mask=None, out_dtype=None, **_):
        torch_npu = import_torch_npu()
        if torch_npu is None:
            raise RuntimeError(
                f"npu_fia_ip{inner_precise} needs torch_npu with Ascend CANN (pip install .[npu] on an NPU machine)"
            )
        if not _on_npu(q):
            raise ValueError(f"npu_fia_ip{inner_precise} runs on NPU tensors, got device {q.device}")
        kwargs = npu_fia_kwargs(
            q, k, v, inner_precise=inner_precise, scale=scale, is_causal=is_causal, attn_mask=attn_mask
        )
        out = torch_npu.npu_fused_infer_attention_score(q, k, v, **kwargs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.to(_checks.check_out_dtype(out_dtype, q.dtype))

    return run


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("pasa", "PASA at the --precision preset", _pasa(None), precision=lambda p: p),
        Method(
            "fa_qk",
            "flash attention, QKᵀ rounded before scaling (vendor style)",
            _fa("fa_qk"),
            precision=_arranged("fa_qk"),
        ),
        Method("fa_q", "flash attention, Q pre-scaled", _fa("fa_q"), precision=_arranged("fa_q")),
        Method(
            "fa_naive",
            "untiled attention, Q pre-scaled (same-precision naive baseline)",
            _fa("fa_naive"),
            precision=_arranged("fa_naive"),
        ),
        Method(
            "fa_hybrid",
            "flash attention with fp32 scores and vector unit",
            _fa("fa_hybrid"),
            precision=_arranged("fa_hybrid"),
        ),
        Method(
            "smooth_k",
            "global K smoothing (SageAttention style), then fa_qk",
            _smooth_k,
            precision=_arranged("smooth_k"),
        ),
        Method("sdpa", "torch scaled_dot_product_attention in the run's matmul format", _sdpa),
        Method("npu_fia_ip0", "torch_npu fused infer attention, inner_precise=0", _npu_fia(0), npu_only=True),
        Method("npu_fia_ip1", "torch_npu fused infer attention, inner_precise=1", _npu_fia(1), npu_only=True),
    ]
}

#: What ``pasa-verify`` runs by default (plus the NPU kernels on an NPU).
DEFAULT_METHODS = ("pasa", "pasa:script", "fa_qk", "fa_q", "fa_hybrid", "smooth_k", "sdpa")


def method_names() -> list[str]:
    """Every accepted method name, including ``pasa:<preset>`` for each preset."""
    return list(METHODS) + [f"pasa:{p}" for p in PRESETS]


def get_method(name: str) -> Method:
    """Look a method up by name (``pasa:<preset>`` selects PASA at a preset)."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a str, got {type(name).__name__}")
    if name.startswith("pasa:"):
        preset = name.split(":", 1)[1]
        if preset not in PRESETS:
            raise ValueError(f"unknown PASA preset in method {name!r}; presets: {sorted(PRESETS)}")
        return Method(
            name, f"PASA at the {preset} preset", _pasa(preset), precision=lambda _p: PRESETS[preset]
        )
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {method_names()}, got {name!r}") from None


def run_method(
    name: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    precision: str | Precision = "npu_fp16",
    beta: float | None = None,
    block_q: int = 128,
    block_kv: int = 128,
    scale: float | None = None,
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Run the harness method ``name`` on q, k, v with the shared knobs (output in ``out_dtype``,
    default ``q.dtype``)."""
    m = get_method(name)
    kw: dict = dict(
        precision=precision,
        scale=scale,
        is_causal=is_causal,
        attn_mask=attn_mask,
        block_kv=block_kv,
        out_dtype=out_dtype,
    )
    if m.name.startswith("pasa"):
        kw.update(beta=beta, block_q=block_q)
    return m(q, k, v, **kw)
