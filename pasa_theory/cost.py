"""A cost model of one flash-attention tile: an *estimate* by counting, docs/beyond.md §2.

For one tile of ``block_q`` query rows × ``block_kv`` keys (head dim d, value dim dv) it counts

* ``matrix_flops``: multiply-adds of the matrix unit × 2, with every extra column of an operand padded
  to the matrix unit's granule ``pad`` (16 on the Ascend Cube and NVIDIA's fp16 MMA: one augmented column
  costs 16);
* ``vector_ops``: element-wise operations of the vector unit (one per element per operation; a row
  reduction counts one per element, a conversion counts one per element);
* ``bytes_to_vector``: bytes moved from the matrix unit's output to the vector unit (the paper's
  bandwidth argument: fp16 scores move half the bytes of fp32 ones).

Arrangements (the methods of the README's grid table):

``fa_fp16``       flash attention in fp16 (``fa_qk``): fp16 scores and P·V out; per score τ·s, the row
                  max, s − m, exp, the row sum (5 ops); per row the max merge, α = e^(m−m'), ℓ update
                  (5 ops); per output element O·α + P·V (2 ops).
``fa_hybrid``     the same with fp32 scores and P·V out (4 bytes) and one more op per score (P converted
                  to fp16 for the P·V operand).
``pasa``          npu_fp16 PASA: K̃ = M·K once per KV block and call (2·n²·d, shared by the ``q_tiles``
                  query tiles of a sequence), τ folded into M; per score the block row mean, the max,
                  s − m, exp, the row sum (5 ops); per row 8 ops (offset, frame, max merge, α, ℓ).
``fp16_accurate`` the reference in the accumulator (docs/precision.md §6): two augmented score columns
                  (padded to ``pad``), a ones column in P·V (padded to ``pad``) giving ℓ, τ at the
                  conversion; per score the row max (reference moves) and exp (2 ops); per row 6 ops; P·V
                  stays in the matrix unit's accumulator and moves to the vector unit (fp16) only when
                  the reference moves or at the end (fraction ``flush_fraction`` of tiles, default
                  ``recompute_fraction`` + 1/``kv_blocks``); a first pass over one block per query tile
                  (fraction 1/``kv_blocks`` of the tiles) and recomputed tiles (fraction
                  ``recompute_fraction``) repeat the score product, its transfer and the max.

Every count is per tile and averaged over the tiles of a sequence (the fractions); no timing is implied.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import check_block

__all__ = ["ARRANGEMENTS", "TileCost", "tile_costs", "cost_table"]

ARRANGEMENTS = ("fa_fp16", "fa_hybrid", "pasa", "fp16_accurate")


@dataclass(frozen=True)
class TileCost:
    """The counts of one tile (module docstring); floats because of the amortised fractions."""

    arrangement: str
    matrix_flops: float
    vector_ops: float
    bytes_to_vector: float


def _fraction(value: object, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argname} must be a real number in [0, 1], got {type(value).__name__}")
    if not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{argname} must lie in [0, 1], got {value}")
    return float(value)


def tile_costs(
    arrangement: str,
    *,
    block_q: int = 128,
    block_kv: int = 128,
    head_dim: int = 128,
    v_dim: int | None = None,
    pad: int = 16,
    q_tiles: int = 11,
    kv_blocks: int = 11,
    recompute_fraction: float = 0.0,
    flush_fraction: float | None = None,
) -> TileCost:
    """The cost of one tile of ``arrangement`` (one of :data:`ARRANGEMENTS`); see the module docstring
    for what is counted. ``q_tiles`` query tiles share PASA's K̃ = M·K; ``kv_blocks`` KV blocks per row
    tile (the first pass of ``fp16_accurate`` is one of them); ``recompute_fraction`` of the tiles of
    ``fp16_accurate`` are computed again after a reference move. Defaults: the reference shape
    (S = 1407: 11 tiles of 128)."""
    if arrangement not in ARRANGEMENTS:
        raise ValueError(f"arrangement must be one of {ARRANGEMENTS}, got {arrangement!r}")
    br = check_block(block_q, "block_q")
    bc = check_block(block_kv, "block_kv")
    d = check_block(head_dim, "head_dim")
    dv = d if v_dim is None else check_block(v_dim, "v_dim")
    g = check_block(pad, "pad")
    qt = check_block(q_tiles, "q_tiles")
    kb = check_block(kv_blocks, "kv_blocks")
    rf = _fraction(recompute_fraction, "recompute_fraction")
    scores = br * bc
    if arrangement in ("fa_fp16", "fa_hybrid"):
        wide = arrangement == "fa_hybrid"
        flops = 2.0 * scores * d + 2.0 * scores * dv
        ops = (6 if wide else 5) * scores + 5 * br + 2 * br * dv
        nbytes = (4 if wide else 2) * (scores + br * dv)
        return TileCost(arrangement, flops, float(ops), float(nbytes))
    if arrangement == "pasa":
        flops = 2.0 * scores * d + 2.0 * scores * dv + 2.0 * bc * bc * d / qt
        ops = 5 * scores + 8 * br + 2 * br * dv
        return TileCost(arrangement, flops, float(ops), 2.0 * (scores + br * dv))
    ff = rf + 1.0 / kb if flush_fraction is None else _fraction(flush_fraction, "flush_fraction")
    extra = 1.0 / kb + rf  # first pass and recomputed tiles repeat the score product
    d_aug = d + _padded(2, g)
    dv_aug = dv + _padded(1, g)
    acc_flops = (1.0 + extra) * 2.0 * scores * d_aug + 2.0 * scores * dv_aug
    acc_ops = (2 + extra) * scores + 6 * br + ff * 2 * br * dv
    acc_bytes = (1.0 + extra) * 2 * scores + ff * 2 * br * dv_aug
    return TileCost(arrangement, acc_flops, acc_ops, acc_bytes)


def _padded(columns: int, granule: int) -> int:
    """``columns`` extra operand columns rounded up to the matrix unit's granule."""
    return -(-columns // granule) * granule


def cost_table(**kw: int | float | None) -> list[TileCost]:
    """:func:`tile_costs` of every arrangement with the same keyword arguments."""
    return [tile_costs(a, **kw) for a in ARRANGEMENTS]  # type: ignore[arg-type]
