"""apply_trainable: frozen expert rows and embedding rows stay bit-identical under AdamW with weight decay."""

from __future__ import annotations

import pytest
import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.model.freezing import apply_trainable, count_trainable
from deeptalk.model.switches import ParamGroup, RoutingMode

from .conftest import LAYOUT, build_tiny, random_batch

SPLIT = ExpertSplit([[0, 1, 2, 3], [4, 5, 6, 7]])
S2A = [  # the reference's speech-expert stage (paper.md §2.2)
    ParamGroup.SPEECH_EXPERTS, ParamGroup.ROUTERS, ParamGroup.SHARED_EXPERTS, ParamGroup.DENSE_LAYER0,
    ParamGroup.NORMS, ParamGroup.EMBEDDINGS,
]


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _train_steps(model, groups, split=None, steps=2, mode=RoutingMode.NONE):
    param_groups = apply_trainable(model, groups, split)
    model.set_routing(mode, split)
    opt = torch.optim.AdamW(param_groups, lr=1e-2, weight_decay=0.1)
    model.train()
    for seed in range(steps):
        opt.zero_grad()
        model(random_batch(b=3, t=16, seed=seed)).loss.backward()
        opt.step()
    return param_groups


def test_speech_only_stage_leaves_text_experts_bit_identical():
    model = build_tiny()
    model.set_expert_split(SPLIT)
    before = _snapshot(model)
    _train_steps(model, S2A, mode=RoutingMode.SPEECH_ONLY)
    for i, moe in enumerate(model.moe_layers()):
        speech, text = list(SPLIT.speech[i]), [e for e in range(8) if e not in SPLIT.speech[i]]
        for kind in ("gate_up_proj", "down_proj"):
            name = f"backbone.model.layers.{moe.layer_idx}.mlp.experts.{kind}"
            now = getattr(moe.experts, kind)
            assert torch.equal(now[text], before[name][text]), name
            assert not torch.equal(now[speech], before[name][speech]), name
        attn = f"backbone.model.layers.{moe.layer_idx}.self_attn.o_proj.weight"
        assert torch.equal(dict(model.named_parameters())[attn], before[attn])  # MoE attention frozen
    emb = "backbone.model.embed_tokens.weight"
    assert not torch.equal(model.embed_tokens.weight, before[emb])
    assert torch.equal(model.projector.fc1.weight, before["projector.fc1.weight"])


def test_text_experts_group_alone_trains_only_text_rows_without_masking():
    model = build_tiny()
    before = _snapshot(model)
    _train_steps(model, [ParamGroup.TEXT_EXPERTS], split=SPLIT)  # routing unmasked: speech rows do get gradients
    for i, moe in enumerate(model.moe_layers()):
        speech = list(SPLIT.speech[i])
        name = f"backbone.model.layers.{moe.layer_idx}.mlp.experts.gate_up_proj"
        assert torch.equal(moe.experts.gate_up_proj[speech], before[name][speech])
        assert not torch.equal(moe.experts.gate_up_proj, before[name])
        router = f"backbone.model.layers.{moe.layer_idx}.mlp.gate.weight"
        assert torch.equal(moe.router.weight, before[router])


def test_strict_recipe_keeps_every_original_text_row():
    model = build_tiny()
    before = _snapshot(model)["backbone.model.embed_tokens.weight"]
    groups = _train_steps(model, [ParamGroup.NEW_EMBEDDING_ROWS, ParamGroup.SPEECH_EXPERTS], split=SPLIT)
    emb = model.embed_tokens.weight
    n = LAYOUT.text_vocab_size
    assert torch.equal(emb[:n], before[:n])
    assert not torch.equal(emb[n:], before[n:])
    partial = next(g for g in groups if g["name"] == "partially_frozen")
    assert partial["weight_decay"] == 0.0 and any(p is emb for p in partial["params"])


def test_param_groups_and_counts():
    model = build_tiny()
    groups = apply_trainable(model, [ParamGroup.PROJECTOR, ParamGroup.NORMS, ParamGroup.ROUTERS])
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"decay", "no_decay"}
    assert by_name["no_decay"]["weight_decay"] == 0.0 and "weight_decay" not in by_name["decay"]
    expected = sum(p.numel() for p in model.projector.parameters())
    expected += sum(moe.router.weight.numel() for moe in model.moe_layers())
    expected += sum(p.numel() for n, p in model.named_parameters() if "layernorm" in n and "self_attn" not in n)
    expected += model.backbone.model.norm.weight.numel()
    assert count_trainable(model) == expected
    assert all(not p.requires_grad for p in model.audio_encoder.parameters())
    apply_trainable(model, [])  # re-applying replaces the previous policy and its hooks
    assert count_trainable(model) == 0 and not model._grad_mask_handles


@pytest.mark.parametrize("family", ["deepseek_v2", "qwen2_moe"])
def test_every_parameter_belongs_to_some_group(family):
    model = build_tiny(family=family)
    apply_trainable(model, list(ParamGroup), split=SPLIT)
    untouched = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert untouched == {"audio_encoder"}  # the pretrained Whisper encoder is frozen at every profile


def test_one_sided_expert_group_needs_a_split():
    with pytest.raises(ValueError, match="needs an expert split"):
        apply_trainable(build_tiny(), [ParamGroup.SPEECH_EXPERTS])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_frozen_rows_hold_after_the_model_is_cast_once_freezing_is_set(dtype):
    """DeepSpeed casts (bf16) and moves the model after ``apply_trainable``: the hooks must still hold."""
    model = build_tiny()
    model.set_expert_split(SPLIT)
    param_groups = apply_trainable(model, S2A)
    model.set_routing(RoutingMode.SPEECH_ONLY, SPLIT)
    model.to(dtype)
    before = _snapshot(model)
    opt = torch.optim.AdamW(param_groups, lr=1e-2, weight_decay=0.1)
    model.train()
    opt.zero_grad()
    model(random_batch(b=3, t=16, seed=0)).loss.backward()
    opt.step()
    for i, moe in enumerate(model.moe_layers()):
        speech, text = list(SPLIT.speech[i]), [e for e in range(8) if e not in SPLIT.speech[i]]
        for kind in ("gate_up_proj", "down_proj"):
            name = f"backbone.model.layers.{moe.layer_idx}.mlp.experts.{kind}"
            now = getattr(moe.experts, kind)
            assert now.dtype == dtype
            assert torch.equal(now[text], before[name][text]), name
            assert not torch.equal(now[speech], before[name][speech]), name


def test_row_masks_follow_the_gradient_to_another_device():
    """The CPU stand-in for a GPU: hooks planned on a ``meta`` model meet gradients on ``meta`` while their
    masks live on the CPU; CUDA refuses a mask on another device just as ``meta`` does."""
    expected = count_trainable(_planned(build_tiny()))
    model = _planned(build_tiny().to("meta"))
    assert count_trainable(model) == expected  # a model not yet materialised can be planned and counted
    partial = [p for n, p in model.named_parameters() if n in model._frozen_row_masks]
    assert partial and model._grad_mask_handles
    for p in partial:
        p.sum().backward()
        assert p.grad.device.type == "meta" and p.grad.shape == p.shape


def _planned(model):
    apply_trainable(model, [ParamGroup.NEW_EMBEDDING_ROWS, ParamGroup.SPEECH_EXPERTS, ParamGroup.ROUTERS], SPLIT)
    return model
