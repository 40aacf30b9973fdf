"""The one place that decides which parameters train: ``apply_trainable(model, groups, split)``.

Experts live in fused 3D tensors (``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``) and the router in
one ``[E, H]`` matrix, so freezing "the text experts" means freezing *rows* of a tensor that also holds
trainable rows. That is done with a gradient hook that zeroes the frozen rows' gradient (``masked_fill``,
so even a NaN gradient cannot leak), and those partially frozen tensors go to an optimizer group with
``weight_decay=0``: with a zero gradient AdamW's moments stay 0 and its update is exactly 0, while decoupled
weight decay would otherwise still shrink frozen rows (STACK.md). Build a fresh optimizer after every call
(stale moments from an earlier stage would move frozen rows).

Row masks are index masks, built on the CPU whatever device the model is on (a model still on ``meta`` can be
planned). Each hook copies its mask once to every device a gradient arrives on, so the masks follow their
parameter when DeepSpeed moves the model to the accelerator or casts it to bf16 after this call (both keep the
parameter objects). A move that *replaces* the parameters (``to("meta")`` then ``to_empty``, swap-tensor
conversion) drops their hooks, like it drops the optimizer's references: call ``apply_trainable`` again.

Group membership (a parameter may be in several groups; it trains if any selected group covers it):
- EMBEDDINGS: the whole embedding and head (one tensor when tied); NEW_EMBEDDING_ROWS: their rows from
  ``layout.text_vocab_size`` on
  (text specials + all audio blocks), i.e. the "strict" recipe that leaves every original text row untouched.
- PROJECTOR (the pretrained Whisper encoder is frozen at every profile and never trains).
- ATTENTION: self-attention of MoE layers (incl. MLA's internal norms); DENSE_LAYER0: attention + FFN of the
  leading dense layer(s).
- SPEECH_EXPERTS / TEXT_EXPERTS: rows of the routed experts named / not named by the split (original experts);
  ADDED_EXPERTS: experts added by MoExtend and their router rows.
- SHARED_EXPERTS (Qwen2-MoE: with its sigmoid gate); ROUTERS: router rows of the original experts;
  NORMS: the decoder's RMSNorms (input, post-attention, final).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from deeptalk.model.backbone import decoder_layers
from deeptalk.model.experts import ExpertSplit
from deeptalk.model.switches import ParamGroup

log = logging.getLogger(__name__)


class _Plan:
    """Per parameter: fully trainable, or a bool row mask over dim 0."""

    def __init__(self) -> None:
        self.params: dict[int, nn.Parameter] = {}
        self.full: set[int] = set()
        self.rows: dict[int, torch.Tensor] = {}

    def add_full(self, param: nn.Parameter) -> None:
        self.params[id(param)] = param
        self.full.add(id(param))

    def add_rows(self, param: nn.Parameter, rows: torch.Tensor) -> None:
        if not bool(rows.any()):
            return
        self.params[id(param)] = param
        current = self.rows.get(id(param))
        self.rows[id(param)] = rows.clone() if current is None else current | rows


def apply_trainable(
    model: nn.Module, groups: Iterable[ParamGroup | str], split: ExpertSplit | None = None
) -> list[dict]:
    """Make exactly ``groups`` trainable on a SpeechLM; return optimizer param groups.

    Returns up to three groups, each ``{"name", "params"[, "weight_decay"]}``: ``decay`` (fully trainable
    matrices, optimizer default decay), ``no_decay`` (1-D: norms, biases) and ``partially_frozen`` (tensors
    with frozen rows); the last two carry ``weight_decay=0.0``. Pass them straight to ``torch.optim.AdamW``.
    """
    groups = {ParamGroup(g) for g in groups}
    split = split if split is not None else getattr(model, "expert_split", None)
    if (ParamGroup.SPEECH_EXPERTS in groups) != (ParamGroup.TEXT_EXPERTS in groups) and split is None:
        raise ValueError("SPEECH_EXPERTS or TEXT_EXPERTS alone needs an expert split; none given or set on the model")

    plan = _Plan()
    backbone = model.backbone
    emb = backbone.get_input_embeddings().weight
    tables = [emb] if model.cfg.backbone.head == "tied" else [emb, backbone.get_output_embeddings().weight]
    for table in tables:
        if ParamGroup.EMBEDDINGS in groups:
            plan.add_full(table)
        if ParamGroup.NEW_EMBEDDING_ROWS in groups:
            plan.add_rows(table, torch.arange(table.shape[0]) >= model.layout.text_vocab_size)
    if ParamGroup.PROJECTOR in groups:
        for p in model.projector.parameters():
            plan.add_full(p)
    if ParamGroup.NORMS in groups:
        plan.add_full(backbone.model.norm.weight)

    moe_index = {moe.layer_idx: i for i, moe in enumerate(model.moe_layers())}
    for layer_idx, layer in enumerate(decoder_layers(backbone)):
        if ParamGroup.NORMS in groups:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                for p in norm.parameters():
                    plan.add_full(p)
        if layer_idx not in moe_index:
            if ParamGroup.DENSE_LAYER0 in groups:
                for p in (*layer.self_attn.parameters(), *layer.mlp.parameters()):
                    plan.add_full(p)
            continue
        if ParamGroup.ATTENTION in groups:
            for p in layer.self_attn.parameters():
                plan.add_full(p)
        _plan_moe_layer(plan, model, layer.mlp, moe_index[layer_idx], groups, split)

    return _apply(model, plan)


def _plan_moe_layer(plan: _Plan, model: nn.Module, moe: nn.Module, index: int, groups: set[ParamGroup],
                    split: ExpertSplit | None) -> None:
    n_experts = moe.experts.gate_up_proj.shape[0]
    n_original = n_experts - model.n_added_experts
    original = torch.arange(n_experts) < n_original  # masks live on the CPU (module docstring)
    speech = split.speech_mask(index, n_experts) if split is not None else torch.zeros_like(original)
    expert_rows = torch.zeros(n_experts, dtype=torch.bool)
    if ParamGroup.SPEECH_EXPERTS in groups:
        expert_rows |= speech
    if ParamGroup.TEXT_EXPERTS in groups:
        expert_rows |= original & ~speech
    if ParamGroup.ADDED_EXPERTS in groups:
        expert_rows |= ~original
    for p in (moe.experts.gate_up_proj, moe.experts.down_proj):
        plan.add_rows(p, expert_rows)
    router_rows = torch.zeros(n_experts, dtype=torch.bool)
    if ParamGroup.ROUTERS in groups:
        router_rows |= original
    if ParamGroup.ADDED_EXPERTS in groups:
        router_rows |= ~original
    plan.add_rows(moe.gate.weight, router_rows)
    if ParamGroup.SHARED_EXPERTS in groups:
        shared = [moe.shared_experts] if hasattr(moe, "shared_experts") else [moe.shared_expert, moe.shared_expert_gate]
        for module in shared:
            for p in module.parameters():
                plan.add_full(p)


class _ZeroFrozenRows:
    """Gradient hook: zero the rows of a gradient that belong to frozen rows of its parameter.

    The mask stays on the CPU and is copied once per device a gradient arrives on (CUDA's ``masked_fill``
    refuses a mask on another device); a bool mask serves every gradient dtype.
    """

    def __init__(self, trainable_rows: torch.Tensor, ndim: int) -> None:
        self._frozen = ~trainable_rows.cpu().view(-1, *([1] * (ndim - 1)))
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        frozen = self._on_device.get(grad.device)
        if frozen is None:
            frozen = self._on_device[grad.device] = self._frozen.to(grad.device)
        return grad.masked_fill(frozen, 0.0)


def _apply(model: nn.Module, plan: _Plan) -> list[dict]:
    for handle in getattr(model, "_grad_mask_handles", []):
        handle.remove()
    model._grad_mask_handles = []
    model._frozen_row_masks = {}
    decay, no_decay, partial = [], [], []
    n_train = n_total = 0
    for name, p in model.named_parameters():  # tied weights appear once
        n_total += p.numel()
        key = id(p)
        if key not in plan.params:
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        rows = None if key in plan.full else plan.rows[key]
        if rows is None or bool(rows.all()):
            (decay if p.ndim >= 2 else no_decay).append(p)
            n_train += p.numel()
            continue
        model._grad_mask_handles.append(p.register_hook(_ZeroFrozenRows(rows, p.ndim)))
        model._frozen_row_masks[name] = ~rows
        partial.append(p)
        n_train += int(rows.sum()) * (p.numel() // p.shape[0])
    log.info("trainable parameters: %d of %d (%.1f %%)", n_train, n_total, 100.0 * n_train / max(1, n_total))
    out = []
    if decay:
        out.append({"name": "decay", "params": decay})
    if no_decay:
        out.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
    if partial:
        out.append({"name": "partially_frozen", "params": partial, "weight_decay": 0.0})
    return out


def count_trainable(model: nn.Module) -> int:
    """Parameters that can change under the current ``apply_trainable`` (frozen rows not counted)."""
    masks = getattr(model, "_frozen_row_masks", {})
    total = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        frozen = masks.get(name)
        total += p.numel() if frozen is None else int((~frozen).sum()) * (p.numel() // p.shape[0])
    return total
