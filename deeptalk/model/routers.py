"""Router subclasses that can restrict routing to an expert group and report their decisions.

They replace the backbone's stock routers at build time (``install_routers``): same parameters (the weight
Parameter object is shared, so checkpoints and optimizers see no difference), same math when unmasked.
Every routing decision can be streamed to "sinks" (recorders, the aux-loss collector) without forward hooks.

**Gate weights under a mask** (``masked_gate``; a training-stage choice, ``PhaseSpec.masked_gate``). Inference
never masks (paper.md §2.2, §7), and DeepSeek-V2 does not renormalise the top-k weights (``norm_topk_prob``
false), so a served expert's weight is its probability in the softmax over *all* experts.

- ``served`` (default): masked experts cannot be selected, but the weights are the same full-softmax
  probabilities the unmasked router gives those experts, so a stage trains each expert at the gate scale it is
  served with. Train and serve route the same way.
- ``renormalised`` (the reference's ``LUCYMoEGate``): masked logits → −inf, softmax over the allowed experts,
  top-k of those. With 3 of 8 experts allowed and top-2, the chosen experts carry ≥ ⅔ of the weight in
  training where the served model gives them ~0.25–0.6: a single-modality stage trains its experts at a larger
  scale than they are served at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2TopkRouter
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeTopKRouter

from deeptalk.model.switches import MASKED_GATES


@dataclass
class RouterOutput:
    """One router call. N = tokens of the call flattened row-major from [B, T] (position b*T + t)."""

    layer_idx: int
    logits: torch.Tensor  # [N, E] float32, masked experts at −inf
    probs: torch.Tensor  # [N, E] gate probabilities: softmax over all experts, or over the allowed ones (renormalised)
    topk_indices: torch.Tensor  # [N, k]
    topk_weights: torch.Tensor  # [N, k]


RoutingSink = Callable[[RouterOutput], None]


class MaskableRouterMixin:
    """State shared by the family-specific routers: the allowed-expert mask and the output sinks."""

    layer_idx: int
    num_experts: int
    top_k: int

    def _init_masking(self, layer_idx: int) -> None:
        self.layer_idx = layer_idx
        self.register_buffer("allowed", torch.ones(self.num_experts, dtype=torch.bool), persistent=False)
        self.masked = False
        self.masked_gate = "served"
        self.sinks: list[RoutingSink] = []

    def set_masked_gate(self, gate: str) -> None:
        """How top-k weights are computed while a mask is set: ``served`` or ``renormalised`` (module docstring)."""
        if gate not in MASKED_GATES:
            raise ValueError(f"layer {self.layer_idx}: unknown masked gate {gate!r}; use one of {MASKED_GATES}")
        self.masked_gate = gate

    def set_allowed(self, allowed: torch.Tensor | None) -> None:
        """Restrict routing to ``allowed`` (bool [E]); None lifts the restriction."""
        if allowed is None:
            self.allowed.fill_(True)
            self.masked = False
            return
        if allowed.shape != (self.num_experts,) or allowed.dtype != torch.bool:
            raise ValueError(f"layer {self.layer_idx}: allowed mask must be bool [{self.num_experts}]")
        n_allowed = int(allowed.sum())
        if n_allowed < self.top_k:
            raise ValueError(
                f"layer {self.layer_idx}: only {n_allowed} experts allowed but top-k is {self.top_k}"
            )
        self.allowed.copy_(allowed.to(self.allowed.device))
        self.masked = n_allowed < self.num_experts

    def _scores(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, probs, selection scores). Unmasked: the stock ops exactly. Masked: logits of masked experts
        → −inf; probs = the softmax over all experts (``served``) or over the allowed ones (``renormalised``);
        selection scores at −1 for masked experts (below any probability, so top-k never picks one even if an
        allowed probability underflows to 0). Top-k weights are taken from ``probs``."""
        if not self.masked:
            probs = logits.softmax(dim=-1, dtype=torch.float32)
            return logits, probs, probs
        masked_logits = logits.masked_fill(~self.allowed, float("-inf"))
        source = masked_logits if self.masked_gate == "renormalised" else logits
        probs = source.softmax(dim=-1, dtype=torch.float32)
        return masked_logits, probs, probs.masked_fill(~self.allowed, -1.0)

    def _emit(self, logits: torch.Tensor, probs: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> None:
        if self.sinks:
            out = RouterOutput(self.layer_idx, logits, probs, idx, weights)
            for sink in self.sinks:
                sink(out)


class MaskableDeepseekV2Router(MaskableRouterMixin, DeepseekV2TopkRouter):
    """``DeepseekV2TopkRouter`` with a routing mask; returns the stock ``(logits, topk_weights, topk_indices)``."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config)
        self._init_masking(layer_idx)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Same op sequence with or without sinks (activation-checkpoint recomputation must match the forward).
        hidden_states = hidden_states.view(-1, self.hidden_dim)
        logits = F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32))
        logits, probs, select = self._scores(logits)
        if self.topk_method == "group_limited_greedy":
            per_group = self.num_experts // self.num_group
            group_scores = select.view(-1, self.num_group, per_group).max(dim=-1).values
            group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, group_idx, True)
            select = select.masked_fill(~group_mask.repeat_interleave(per_group, dim=1), -1.0 if self.masked else 0.0)
        elif self.topk_method != "greedy":
            raise ValueError(f"unsupported topk_method {self.topk_method!r}")
        weights, idx = torch.topk(select, k=self.top_k, dim=-1, sorted=False)
        weights = weights * self.routed_scaling_factor
        self._emit(logits, probs, idx, weights)
        return logits, weights, idx


class MaskableQwen2MoeRouter(MaskableRouterMixin, Qwen2MoeTopKRouter):
    """``Qwen2MoeTopKRouter`` with a routing mask; returns the stock ``(logits, scores, indices)``."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config)
        self._init_masking(layer_idx)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        logits = F.linear(hidden_states, self.weight)
        logits, probs, select = self._scores(logits)
        weights, idx = torch.topk(select, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(logits.dtype)
        self._emit(logits.float(), probs, idx, weights)
        return logits, weights, idx


ROUTER_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    DeepseekV2TopkRouter: MaskableDeepseekV2Router,
    Qwen2MoeTopKRouter: MaskableQwen2MoeRouter,
}


def make_maskable(router: nn.Module, config, layer_idx: int) -> nn.Module:
    """A maskable router sharing ``router``'s weight Parameter (identity kept for optimizers and tying)."""
    if isinstance(router, MaskableRouterMixin):
        return router
    cls = ROUTER_CLASSES.get(type(router))
    if cls is None:
        raise ValueError(f"no maskable router for {type(router).__name__}; supported: {[c.__name__ for c in ROUTER_CLASSES]}")
    new = cls(config, layer_idx)
    new.weight = router.weight
    return new.to(router.weight.device)


@dataclass
class RoutingRecord:
    """Detached copy of one router call (see RouterOutput)."""

    probs: torch.Tensor
    topk_indices: torch.Tensor
    topk_weights: torch.Tensor


@dataclass
class RoutingRecorder:
    """Collects every routing decision while active (``with model.record_routing() as rec``).

    ``records[layer_idx]`` holds one RoutingRecord per forward call in call order; the ``indices`` /
    ``probs`` accessors concatenate them, so token n of a single [B, T] forward is position (n // T, n % T).
    """

    records: dict[int, list[RoutingRecord]] = field(default_factory=dict)

    def __call__(self, out: RouterOutput) -> None:
        self.records.setdefault(out.layer_idx, []).append(
            RoutingRecord(out.probs.detach().cpu(), out.topk_indices.detach().cpu(), out.topk_weights.detach().cpu())
        )

    @property
    def layers(self) -> list[int]:
        return sorted(self.records)

    def indices(self, layer_idx: int) -> torch.Tensor:
        """[N, k] expert indices chosen for every token routed through one layer."""
        return torch.cat([r.topk_indices for r in self._get(layer_idx)])

    def probs(self, layer_idx: int) -> torch.Tensor:
        """[N, E] router probabilities (after masking) for every token routed through one layer."""
        return torch.cat([r.probs for r in self._get(layer_idx)])

    def expert_counts(self, layer_idx: int, select: torch.Tensor | None = None) -> torch.Tensor:
        """[E] how often each expert was in the top-k, over the tokens where ``select`` (bool [N]) is True."""
        idx = self.indices(layer_idx)
        n_experts = self._get(layer_idx)[0].probs.shape[-1]
        if select is not None:
            select = select.reshape(-1).bool().cpu()
            if select.shape[0] != idx.shape[0]:
                raise ValueError(f"select has {select.shape[0]} entries for {idx.shape[0]} routed tokens")
            idx = idx[select]
        return torch.bincount(idx.reshape(-1), minlength=n_experts)

    def clear(self) -> None:
        self.records.clear()

    def _get(self, layer_idx: int) -> list[RoutingRecord]:
        if layer_idx not in self.records:
            raise ValueError(f"no routing recorded for layer {layer_idx}; recorded layers: {self.layers}")
        return self.records[layer_idx]


@contextmanager
def attach_sink(routers: list[MaskableRouterMixin], sink: RoutingSink) -> Iterator[RoutingSink]:
    """Stream every router call of ``routers`` to ``sink`` inside the block."""
    for router in routers:
        router.sinks.append(sink)
    try:
        yield sink
    finally:
        for router in routers:
            router.sinks.remove(sink)
