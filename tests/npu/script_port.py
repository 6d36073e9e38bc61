"""An independent transcription of the public reference script's ``pasa()`` (PASA_Verification.py,
branch PASA_Torch), used as the oracle for ``precision="script"``.

It follows the script operation by operation (one call computes every head; GQA by
``repeat_interleave``; the KV padding rule; masks as ``mask * -inf``; the running-mean weights as
fp16 scalars; the FA-1 style update) with fp16 torch tensors. Only what stops the script from running
off an NPU is changed: no ``torch_npu``, no ``compare.py``, and the matrix product is a parameter
so the test can run it either as torch's own fp16 CPU matmul or as the fp16-in / fp32-accumulate /
fp16-out model of the package.
"""

from __future__ import annotations

import torch

F16 = torch.float16


def torch_fp16_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, b)


def fp32_accumulate_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a.float(), b.float()).half()


def script_pasa(
    q_in,
    k_in,
    v_in,
    scalar,
    afa,
    *,
    s1=128,
    s2=128,
    matmul=torch_fp16_matmul,
    attention_mask=None,
    out_dtype=F16,
):
    q = q_in.to(torch.float32).to(F16)
    k = k_in.to(torch.float32).to(F16)
    v = v_in.to(torch.float32).to(F16)
    B, N, S1, D = q.shape
    S2 = k.shape[2]
    k = torch.repeat_interleave(k, repeats=N // k.shape[1], dim=1)
    v = torch.repeat_interleave(v, repeats=N // v.shape[1], dim=1)
    actual_s2 = ((S2 - 1) // s2 + 1) * s2
    pad = actual_s2 - S2
    if pad:
        if S2 < s2:
            kp = torch.zeros((B, N, pad, D), dtype=F16)
            vp = torch.zeros((B, N, pad, D), dtype=F16)
        else:
            kp = k[:, :, -pad:, :]
            vp = v[:, :, -pad:, :]
        k = torch.cat((k, kp), dim=2)
        v = torch.cat((v, vp), dim=2)
        if attention_mask is None:
            attention_mask = torch.zeros((B, N, S1, S2), dtype=F16)
        attention_mask = torch.cat(
            (attention_mask, torch.ones((B, N, S1, pad), dtype=attention_mask.dtype)), dim=3
        )
    am = None
    if attention_mask is not None:
        am = torch.nan_to_num(attention_mask.to(F16) * (-torch.inf), nan=0.0)
    nq = S1 // s1
    loop_q = nq + (1 if S1 - nq * s1 else 0)
    nkv = actual_s2 // s2
    afa = torch.tensor(afa).float()
    inv_pam = (afa / (1.0 - afa)).to(F16)
    m_mat = (torch.eye(s2) - torch.ones((s2, s2)) * afa / s2) * scalar
    m_mat = m_mat.to(F16)
    for j in range(nkv):  # the script does this while handling the first Q block
        blk = k[:, :, j * s2 : (j + 1) * s2, :]
        k[:, :, j * s2 : (j + 1) * s2, :] = matmul(blk.permute(0, 1, 3, 2), m_mat).permute(0, 1, 3, 2)
    out = torch.zeros((B, N, S1, D), dtype=F16)
    for i in range(loop_q):
        lo, hi = i * s1, min((i + 1) * s1, S1)
        r = hi - lo
        m_prev = torch.zeros((B, N, r, 1), dtype=F16) - 60000
        l_prev = torch.zeros((B, N, r, 1), dtype=F16)
        o_acc = torch.zeros((B, N, r, D), dtype=F16)
        for j in range(nkv):
            c0, c1 = j * s2, (j + 1) * s2
            s = matmul(q[:, :, lo:hi, :], k[:, :, c0:c1, :].permute(0, 1, 3, 2))
            s_ave = torch.mean(s, dim=-1, keepdim=True)
            if am is not None:
                s = s + (am[:, :, -1, c0:c1].unsqueeze(2) if S1 == 1 else am[:, :, lo:hi, c0:c1])
            m_j = s.max(dim=-1, keepdim=True)[0]
            p = torch.exp(s - m_j)
            l_j = p.sum(dim=-1, keepdim=True)
            if j == 0:
                s_ave_0 = s_ave
            s_ave_temp = s_ave_0 * 1.0
            r1 = torch.tensor(1.0 / (j + 1), dtype=F16)
            r2 = torch.tensor(j / (j + 1), dtype=F16)
            s_ave_0 = s_ave * r1 + s_ave_0 * r2
            ave_j = (s_ave - s_ave_0) * inv_pam
            ave_j_1 = inv_pam * (s_ave_temp - s_ave_0)
            m_temp = torch.max(
                torch.cat((m_j + ave_j, m_prev + inv_pam * (s_ave_temp - s_ave_0)), -1), dim=-1, keepdim=True
            )[0]
            if j == 0:
                l_prev = torch.exp(m_j - m_temp + ave_j_1) * l_j
            else:
                l_prev = torch.exp(m_prev - m_temp + ave_j_1) * l_prev + torch.exp(m_j - m_temp + ave_j) * l_j
            t_o = matmul(p, v[:, :, c0:c1, :])
            if j == 0:
                o_acc = torch.tile(torch.exp(m_j - m_temp + ave_j_1), (1, 1, 1, D)) * t_o
            else:
                o_acc = (
                    torch.tile(torch.exp(m_prev - m_temp + ave_j_1), (1, 1, 1, D)) * o_acc
                    + torch.tile(torch.exp(m_j - m_temp + ave_j), (1, 1, 1, D)) * t_o
                )
            m_prev = m_temp
        out[:, :, lo:hi, :] = o_acc / torch.tile(l_prev, (1, 1, 1, D))
    return out.to(torch.float32).to(out_dtype)


def script_gendata(batch, heads, kv_heads, s1, s2, d, mean, am, distype, dtype, seed=2024724):
    """Transcription of the script's gendata(): seeds, then Q, K, V in that order, fp32 then cast."""
    import random
    import warnings

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    f32 = torch.float32
    if distype == 0:
        q = (torch.rand(batch, heads, s1, d, dtype=f32) - 0.5) * 2.0 * am + mean
        k = (torch.rand(batch, kv_heads, s2, d, dtype=f32) - 0.5) * 2.0 * am + mean
        v = (torch.rand(batch, kv_heads, s2, d, dtype=f32) - 0.5) * 2.0 * am + mean
    else:
        # `tensor * ndarray` goes through NumPy's __array_wrap__ fallback on NumPy 2 (a deprecation
        # warning); the values are the same (x * {0, 1} is exact).
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="__array_wrap__ must accept context", category=DeprecationWarning
            )
            q = torch.normal(mean, 1, size=(batch, heads, s1, d), dtype=f32)
            q += torch.normal(0, am, size=(batch, heads, s1, d), dtype=f32) * np.random.binomial(
                size=(batch, heads, s1, d), n=1, p=0.001
            )
            k = torch.normal(mean, 1, size=(batch, kv_heads, s2, d), dtype=f32)
            k += torch.normal(0, am, size=(batch, kv_heads, s2, d), dtype=f32) * np.random.binomial(
                size=(batch, kv_heads, s2, d), n=1, p=0.001
            )
            v = torch.normal(mean, 1, size=(batch, kv_heads, s2, d), dtype=f32)
            v += torch.normal(0, am, size=(batch, kv_heads, s2, d), dtype=f32) * np.random.binomial(
                size=(batch, kv_heads, s2, d), n=1, p=0.001
            )
    return q.type(dtype), k.type(dtype), v.type(dtype)
