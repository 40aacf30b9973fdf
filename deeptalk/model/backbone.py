"""The MoE decoder backbone: transformers' own DeepseekV2 / Qwen2-MoE causal LMs, built or loaded unchanged.

This module only (1) builds an HF config from ``BackboneConfig`` or loads a local HF checkpoint directory,
(2) resizes the embedding and head (tied, or untied keeping the source's head: ``BackboneConfig.head``) to
the speech vocabulary, (3) swaps the stock routers for the maskable
subclasses, and (4) enumerates MoE layers. Nothing in transformers is patched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DeepseekV2Config, PreTrainedModel, Qwen2MoeConfig

from deeptalk.model.config import BackboneConfig
from deeptalk.model.experts_impl import ensure_registered
from deeptalk.model.routers import MaskableRouterMixin, make_maskable

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def cast_parameters(module: nn.Module, dtype: torch.dtype) -> None:
    """Give ``module``'s floating parameters ``dtype`` in place (the same Parameter objects, so gradient hooks and
    optimizer groups stay valid); buffers keep theirs.

    ``module.to(dtype)`` casts buffers too: RoPE's ``inv_freq`` in bf16 is off by up to 2^-9 relative, a phase
    error of ~0.5 rad at a distance of 1,200 positions, while transformers' loaders and DeepSpeed's bf16 engine
    keep it fp32, so a model trained after such a cast would see other positions than in pretraining and
    serving.
    """
    for param in module.parameters():  # a tied weight appears once
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


def hf_config(cfg: BackboneConfig, vocab_size: int):
    """The transformers config for a backbone built from ``cfg`` (no checkpoint)."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        initializer_range=cfg.initializer_range,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        num_experts_per_tok=cfg.num_experts_per_tok,
        moe_intermediate_size=cfg.moe_intermediate_size,
        norm_topk_prob=cfg.norm_topk_prob,
        tie_word_embeddings=cfg.head == "tied",
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if cfg.family == "deepseek_v2":
        return DeepseekV2Config(
            **common,
            first_k_dense_replace=cfg.first_k_dense_replace,
            n_routed_experts=cfg.n_routed_experts,
            n_shared_experts=cfg.n_shared_experts,
            kv_lora_rank=cfg.kv_lora_rank,
            q_lora_rank=cfg.q_lora_rank,
            qk_nope_head_dim=cfg.qk_nope_head_dim,
            qk_rope_head_dim=cfg.qk_rope_head_dim,
            v_head_dim=cfg.v_head_dim,
            routed_scaling_factor=cfg.routed_scaling_factor,
            topk_method="greedy",
            n_group=1,
            topk_group=1,
        )
    return Qwen2MoeConfig(
        **common,
        num_experts=cfg.n_routed_experts,
        shared_expert_intermediate_size=cfg.moe_intermediate_size * cfg.n_shared_experts,
        decoder_sparse_step=1,
        mlp_only_layers=list(range(cfg.first_k_dense_replace)),
        output_router_logits=False,
    )


def build_backbone(cfg: BackboneConfig, vocab_size: int) -> PreTrainedModel:
    """A freshly initialised backbone (embedding/head of ``vocab_size`` rows), routers maskable."""
    config = hf_config(cfg, vocab_size)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation)
    return prepare_backbone(model, cfg)


def resolve_checkpoint(checkpoint: str | Path, root: str | Path) -> Path:
    """A checkpoint path from the config: absolute as given, relative to the project root otherwise."""
    path = Path(checkpoint)
    return path if path.is_absolute() else Path(root) / path


def checkpoint_vocab_rows(path: str | Path) -> int:
    """Embedding rows of a local HF checkpoint (its config.json's ``vocab_size``), without loading weights.

    The layout's text block is these rows, not ``len(tokenizer)`` (DeepSeek-V2: 102,400 rows, ~100 k tokens).
    """
    config = Path(path) / "config.json"
    if not config.is_file():
        raise ValueError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    rows = json.loads(config.read_text()).get("vocab_size")
    if not isinstance(rows, int) or rows <= 0:
        raise ValueError(f"{config}: vocab_size must be a positive integer, got {rows!r}")
    return rows


def load_backbone(path: str | Path, cfg: BackboneConfig) -> PreTrainedModel:
    """Load a local HF checkpoint directory unchanged (architecture from its config.json)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise ValueError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type != cfg.family:
        raise ValueError(f"checkpoint {path} is a {config.model_type!r} model but the config asks for {cfg.family!r}")
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation, local_files_only=True
    )
    return prepare_backbone(model, cfg)


def prepare_backbone(model: PreTrainedModel, cfg: BackboneConfig) -> PreTrainedModel:
    ensure_registered(cfg.experts_implementation)
    model.set_experts_implementation(cfg.experts_implementation)
    install_routers(model)
    return model


class MoELayer(NamedTuple):
    """``(layer_idx, module)``: a decoder layer index and its MoE block (``.gate``, ``.experts``, shared)."""

    layer_idx: int
    module: nn.Module

    @property
    def router(self) -> MaskableRouterMixin:
        return self.module.gate

    @property
    def experts(self) -> nn.Module:  # fused 3D gate_up_proj [E, 2I, H] and down_proj [E, H, I]
        return self.module.experts

    @property
    def shared(self) -> nn.Module:
        """Shared expert(s); for Qwen2-MoE also its sigmoid gate (the two always train together)."""
        return getattr(self.module, "shared_experts", None) or self.module.shared_expert

    @property
    def num_experts(self) -> int:
        return self.module.experts.gate_up_proj.shape[0]


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    return model.model.layers


def moe_layers(model: PreTrainedModel) -> list[MoELayer]:
    """MoE layers in depth order (entry i of an ExpertSplit belongs to element i)."""
    return [
        MoELayer(i, layer.mlp)
        for i, layer in enumerate(decoder_layers(model))
        if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts")
    ]


def install_routers(model: PreTrainedModel) -> None:
    """Swap each MoE layer's stock router for its maskable subclass (same weight Parameter)."""
    for moe in moe_layers(model):
        moe.module.gate = make_maskable(moe.module.gate, model.config, moe.layer_idx)


def resize_vocab(model: PreTrainedModel, vocab_size: int, keep_rows: int, tie: bool = True) -> None:
    """Give the backbone an embedding and head of ``vocab_size`` rows.

    Rows ``[0, keep_rows)`` are copied from the current input embedding; the rest are N(0, initializer_range)
    (the reference's ``initialize_extended_embedding``). ``tie=True``: the head is the embedding, as in the
    reference (``--tie_word_embeddings True``), which drops an untied source's trained head.
    ``tie=False``: the head keeps the source's own head rows ``[0, keep_rows)`` (its embedding rows when the
    source is tied) and gets new N(0, initializer_range) rows for the rest, so the imported model's text
    logits are the source's (``BackboneConfig.head``).
    """
    old = model.get_input_embeddings()
    old_head = model.get_output_embeddings()
    if keep_rows > old.weight.shape[0]:
        raise ValueError(f"cannot keep {keep_rows} rows of a {old.weight.shape[0]}-row embedding")
    if keep_rows > vocab_size:
        raise ValueError(f"the source vocabulary ({keep_rows} rows) does not fit the layout's text block ({vocab_size})")
    std = model.config.initializer_range
    like = dict(dtype=old.weight.dtype, device=old.weight.device)

    def extended(source: torch.Tensor) -> nn.Parameter:
        weight = torch.empty(vocab_size, source.shape[1], **like)
        with torch.no_grad():
            weight.normal_(0.0, std)
            weight[:keep_rows] = source[:keep_rows]
        return nn.Parameter(weight)

    hidden = old.weight.shape[1]
    embedding = nn.Embedding(vocab_size, hidden, **like)
    embedding.weight = extended(old.weight)
    model.set_input_embeddings(embedding)
    head = nn.Linear(hidden, vocab_size, bias=False, **like)
    head.weight = embedding.weight if tie else extended(old_head.weight)
    model.set_output_embeddings(head)
    model.config.vocab_size = vocab_size
    model.config.tie_word_embeddings = tie
    model.vocab_size = vocab_size
    log.info("embedding resized to %d rows (%d copied, rest N(0, %g)), head %s", vocab_size, keep_rows, std,
             "tied" if tie else "untied (the source's head rows kept)")
