"""Forward+backward throughput of one MoE layer vs a dense SwiGLU FFN and vs the reference's per-expert loop.

    .venv/bin/python benchmarks/moe_layer.py [--shapes tiny,small,finegrained] [--tokens 2048] [--threads 1]

The MoE layer is transformers' ``DeepseekV2Moe`` with DeepTalk's maskable router, run with each experts
implementation (``eager``, ``batched_mm``, ``grouped_mm`` from transformers, ``sorted_mm`` from
``deeptalk.model.experts_impl``) and with routing unmasked and speech-only (half the experts masked).
Baselines, same shapes and the same tokens:
- ``dense``: a SwiGLU FFN with the MoE layer's *active* parameter count (intermediate = (k + shared)·I);
- ``loop``: the reference's training path (DeepSeek ``modeling_deepseek.py``: one ``nn.Linear`` MLP per
  expert, ``repeat_interleave`` the tokens, then ``for i, expert: y[flat_idx == i] = expert(x[flat_idx == i])``).
Prints ``name: value`` lines (tokens/s, median of ``--repeats`` runs), ratios last.

Measured 2026-11-25 on 2 shared AMD EPYC cores (load average ~8), 1 thread, 2048 tokens, ``--repeats 8``:
| shape | best | vs dense (eager / grouped_mm / sorted_mm) | vs loop (eager / grouped_mm / sorted_mm) |
|---|---|---|---|
| tiny (E=8, k=2) | sorted_mm | 0.73 / 0.72 / 0.74 | 1.03 / 1.02 / 1.04 |
| small (E=16, k=2) | sorted_mm | 0.57 / 0.77 / 0.79 | 0.82 / 1.11 / 1.15 |
| finegrained (E=64, k=6) | sorted_mm | 0.27 / 0.59 / 0.66 | 1.13 / 2.44 / 2.72 |
batched_mm: 0.016× dense at tiny (it gathers one weight matrix per token-expert pair). Masked (speech-only)
routing never cost more (masked/unmasked 1.02–1.08 for sorted_mm). On one CPU core the reference loop is
itself GEMM-bound when experts are few and wide (tiny: loop = 0.71× dense), so ≥ 2× over it is only
reachable with many fine-grained experts (the DeepSeek-V2-Lite geometry), where it is met; ≥ 0.8× dense
was not reached (best 0.79 at small).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DeepseekV2Config
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2MLP, DeepseekV2Moe

from deeptalk.model.config import BackboneConfig
from deeptalk.model.experts import ExpertSplit
from deeptalk.model.experts_impl import ensure_registered
from deeptalk.model.routers import make_maskable

IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm", "sorted_mm")
BATCHED_MM_LIMIT_GIB = 1.5


def layer_config(shape: str) -> DeepseekV2Config:
    """``tiny`` / ``small``: the profiles' MoE layers; ``finegrained``: DeepSeek-V2-Lite's expert geometry
    (64 experts, top-6, 2 shared, expert width 1408/2048 of hidden) at hidden 128."""
    if shape == "finegrained":
        b = BackboneConfig(hidden_size=128, n_routed_experts=64, num_experts_per_tok=6, n_shared_experts=2,
                           moe_intermediate_size=88)
    else:
        b = BackboneConfig.for_profile(shape)
    return DeepseekV2Config(
        hidden_size=b.hidden_size, intermediate_size=b.intermediate_size, num_attention_heads=b.num_heads,
        n_routed_experts=b.n_routed_experts, num_experts_per_tok=b.num_experts_per_tok,
        n_shared_experts=b.n_shared_experts, moe_intermediate_size=b.moe_intermediate_size,
        topk_method="greedy", n_group=1, topk_group=1,
    )


def build_moe(config: DeepseekV2Config, impl: str, device: str) -> nn.Module:
    ensure_registered(impl)
    config = copy.deepcopy(config)  # modules read the implementation from their (shared) config object
    config._experts_implementation = impl
    torch.manual_seed(0)
    moe = DeepseekV2Moe(config)
    moe.gate = make_maskable(moe.gate, config, layer_idx=1)
    for p in moe.parameters():
        nn.init.normal_(p, std=0.05)
    return moe.to(device)


class ReferenceLoopMoE(nn.Module):
    """DeepSeek's own training-mode MoE (``DeepseekV2MoE.forward`` when ``self.training``), same weights."""

    def __init__(self, moe: nn.Module, config: DeepseekV2Config) -> None:
        super().__init__()
        self.gate = moe.gate
        self.shared = moe.shared_experts
        self.k = config.num_experts_per_tok
        inter = config.moe_intermediate_size
        self.experts = nn.ModuleList()
        for e in range(config.n_routed_experts):
            mlp = DeepseekV2MLP(config, intermediate_size=inter)
            with torch.no_grad():
                mlp.gate_proj.weight.copy_(moe.experts.gate_up_proj[e, :inter])
                mlp.up_proj.weight.copy_(moe.experts.gate_up_proj[e, inter:])
                mlp.down_proj.weight.copy_(moe.experts.down_proj[e])
            self.experts.append(mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        _, topk_weight, topk_idx = self.gate(x)
        flat_x = x.view(-1, shape[-1])
        flat_idx = topk_idx.view(-1)
        x_rep = flat_x.repeat_interleave(self.k, dim=0)
        y = torch.empty_like(x_rep)
        for i, expert in enumerate(self.experts):
            y[flat_idx == i] = expert(x_rep[flat_idx == i])
        y = (y.view(*topk_weight.shape, -1) * topk_weight.unsqueeze(-1)).sum(dim=1)
        return y.view(*shape) + self.shared(x)


_FLUSH = torch.empty(0)


def _evict_caches(device: str) -> None:
    """Touch 64 MiB (2× this machine's L3) so every candidate starts with cold CPU caches."""
    global _FLUSH
    if device != "cpu":
        return
    if _FLUSH.numel() == 0:
        _FLUSH = torch.zeros(16 * 2**20)
    _FLUSH.add_(1.0)


def measure(candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, repeats: int,
            device: str, warmup: int = 2) -> dict[str, float]:
    """Tokens/s of forward + backward per candidate: median of ``repeats`` timed steps after warm-up steps.

    Candidates are timed round-robin (one step each per round), so load changes on a shared machine hit
    all of them alike instead of skewing whichever ran during a busy spell. Caches are flushed before every
    step: in a real model the other layers evict a layer's weights between its uses, and without the flush
    the result would depend on which other candidates happen to share the cache.
    """
    grad = torch.randn_like(x)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(repeats + warmup):
        for name, fn in candidates.items():
            _evict_caches(device)
            inp = x.detach().requires_grad_(True)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(inp).backward(grad)
            if device == "cuda":
                torch.cuda.synchronize()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    n_tokens = x.shape[0] * x.shape[1]
    return {name: n_tokens / statistics.median(ts) for name, ts in times.items()}


def run_shape(profile: str, tokens: int, repeats: int, device: str) -> tuple[dict[str, float], dict[str, float]]:
    config = layer_config(profile)
    seq = 64
    x = torch.randn(max(1, tokens // seq), seq, config.hidden_size, device=device)
    e, k, s, inter = config.n_routed_experts, config.num_experts_per_tok, config.n_shared_experts, config.moe_intermediate_size
    speech_only = ExpertSplit([list(range(e // 2))]).allowed_mask("speech_only", 0, e).to(device)
    candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for impl in IMPLEMENTATIONS:
        candidates[f"{profile}.moe.{impl}.none"] = build_moe(config, impl, device)
        masked = build_moe(config, impl, device)
        masked.gate.set_allowed(speech_only)
        candidates[f"{profile}.moe.{impl}.speech_only"] = masked
    candidates[f"{profile}.loop"] = ReferenceLoopMoE(build_moe(config, "eager", device), config).to(device)
    candidates[f"{profile}.dense"] = DeepseekV2MLP(config, intermediate_size=(k + s) * inter).to(device)
    # batched_mm gathers one weight matrix per token-expert pair ([S, 2I, H], ~1 GB at finegrained): its
    # allocations would slow whatever runs next, so it is timed in its own group, once (it is 50-100x slower).
    heavy = {name: fn for name, fn in candidates.items() if ".batched_mm." in name}
    results = measure({n: f for n, f in candidates.items() if n not in heavy}, x, repeats, device)
    gathered_gib = x.shape[0] * x.shape[1] * k * 3 * inter * config.hidden_size * 4 / 2**30
    if gathered_gib <= BATCHED_MM_LIMIT_GIB:
        results.update(measure(heavy, x, 1, device, warmup=1))
    else:  # would need several GiB per step on a shared 24 GiB machine
        print(f"{profile}.moe.batched_mm: skipped, gathers {gathered_gib:.1f} GiB of expert weights per step")

    best = max((i for i in IMPLEMENTATIONS if f"{profile}.moe.{i}.none" in results),
               key=lambda i: results[f"{profile}.moe.{i}.none"])
    ratios = {f"{profile}.best_implementation.{best}": 1.0}
    for impl in IMPLEMENTATIONS:
        if f"{profile}.moe.{impl}.none" not in results:
            continue
        base = results[f"{profile}.moe.{impl}.none"]
        ratios[f"{profile}.ratio.{impl}_vs_dense"] = base / results[f"{profile}.dense"]
        ratios[f"{profile}.ratio.{impl}_vs_loop"] = base / results[f"{profile}.loop"]
        ratios[f"{profile}.ratio.{impl}_masked_vs_unmasked"] = results[f"{profile}.moe.{impl}.speech_only"] / base
    return results, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,small,finegrained")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per step (sequences of 64)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device: {args.device}")
    print(f"threads: {torch.get_num_threads()}")
    print(f"tokens: {args.tokens}")
    all_ratios: dict[str, float] = {}
    for profile in args.shapes.split(","):
        results, ratios = run_shape(profile, args.tokens, args.repeats, args.device)
        for name, value in results.items():
            print(f"{name}.tok_per_s: {value:.0f}")
        all_ratios.update(ratios)
    for name, value in all_ratios.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
