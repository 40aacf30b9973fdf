"""MoExtend baseline (paper.md §5.2): add N new speech experts to every MoE layer, with their own router rows.

The added experts are appended to the fused expert tensors and the router matrix (indices E..E+N-1), so
the result is still a stock transformers MoE with E+N experts: it saves, loads and runs unchanged, and the
reference's ``concat([text_logits, audio_logits])`` router is exactly the stacked matrix. The model records
``n_added_experts`` and its expert split becomes "speech = the added experts", so the freezing groups say what
the reference does: train ``ADDED_EXPERTS`` (experts + router rows) with the original experts and router rows
frozen (``apply_trainable`` masks the rows of the shared tensors).

Initialisation follows the reference's intent: new expert j copies an original expert spread evenly over the
layer (indices (j+1)·E/N − 1; the reference's formula k·N − 1 agrees for N = √E and runs out of experts for
larger N, leaving the rest random); new router rows are Kaiming-uniform like a fresh ``nn.Linear``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from deeptalk.model.experts import ExpertSplit
from deeptalk.model.speech_lm import SpeechLM

log = logging.getLogger(__name__)


def add_speech_experts(model: SpeechLM, n: int) -> SpeechLM:
    """Append ``n`` speech experts (+ router rows) to every MoE layer of ``model`` in place and return it."""
    if n <= 0:
        raise ValueError(f"number of added experts must be positive, got {n}")
    if model.n_added_experts:
        raise ValueError(f"model already has {model.n_added_experts} added experts")
    config = model.backbone.config
    layers = model.moe_layers()
    n_orig = layers[0].num_experts
    sources = [(j + 1) * n_orig // n - 1 if n <= n_orig else None for j in range(n)]
    for moe in layers:
        experts = moe.experts
        with torch.no_grad():
            new_gu = experts.gate_up_proj.new_empty(n, *experts.gate_up_proj.shape[1:]).normal_(0, config.initializer_range)
            new_down = experts.down_proj.new_empty(n, *experts.down_proj.shape[1:]).normal_(0, config.initializer_range)
            for j, src in enumerate(sources):
                if src is not None:
                    new_gu[j] = experts.gate_up_proj[src]
                    new_down[j] = experts.down_proj[src]
            experts.gate_up_proj = nn.Parameter(torch.cat([experts.gate_up_proj, new_gu]))
            experts.down_proj = nn.Parameter(torch.cat([experts.down_proj, new_down]))
            router = moe.router
            new_rows = router.weight.new_empty(n, router.weight.shape[1])
            nn.init.kaiming_uniform_(new_rows, a=math.sqrt(5))
            weight = nn.Parameter(torch.cat([router.weight, new_rows]))
        experts.num_experts = n_orig + n
        _set_num_experts(config, n_orig + n)
        fresh = type(router)(config, moe.layer_idx)  # same maskable class, sized for E + n
        fresh.weight = weight
        moe.module.gate = fresh.to(weight.device)
    model.n_added_experts = n
    model.expert_split = None
    model.set_expert_split(ExpertSplit([list(range(n_orig, n_orig + n))] * len(layers)))
    log.info("MoExtend: %d speech experts added to %d MoE layers (%d → %d experts)", n, len(layers), n_orig, n_orig + n)
    return model


def _set_num_experts(config, total: int) -> None:
    if config.model_type == "deepseek_v2":
        config.n_routed_experts = total
    else:
        config.num_experts = total

