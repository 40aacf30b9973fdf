"""MoExtend baseline: added experts train, original experts and router rows stay frozen; save/load works."""

from __future__ import annotations

import pytest
import torch

from deeptalk.model.freezing import apply_trainable
from deeptalk.model.switches import ParamGroup
from deeptalk.model.moextend import add_speech_experts
from deeptalk.model.speech_lm import SpeechLM

from .conftest import build_tiny, random_batch


def test_added_experts_train_while_originals_stay_frozen():
    model = add_speech_experts(build_tiny(), 2)
    moe = model.moe_layers()[0]
    assert moe.num_experts == 10 and model.n_added_experts == 2
    assert model.expert_split.speech == ((8, 9), (8, 9))
    assert torch.equal(moe.experts.gate_up_proj[8], moe.experts.gate_up_proj[3])  # copies of experts 3 and 7
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(apply_trainable(model, [ParamGroup.ADDED_EXPERTS]), lr=1e-2, weight_decay=0.1)
    model.train()
    for seed in range(3):
        opt.zero_grad()
        model(random_batch(b=3, t=16, seed=seed)).loss.backward()
        opt.step()
    for moe in model.moe_layers():
        prefix = f"backbone.model.layers.{moe.layer_idx}.mlp"
        for name, now in [("experts.gate_up_proj", moe.experts.gate_up_proj), ("experts.down_proj", moe.experts.down_proj),
                          ("gate.weight", moe.router.weight)]:
            old = before[f"{prefix}.{name}"]
            assert torch.equal(now[:8], old[:8]), name
            assert not torch.equal(now[8:], old[8:]), name
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert all(".mlp.experts." in n or ".mlp.gate." in n for n in changed)


def test_new_experts_are_routed_to_and_survive_save_load(tmp_path):
    model = add_speech_experts(build_tiny(), 3).eval()
    batch = random_batch(b=3, t=16)
    model.set_routing("speech_only")  # only the added experts
    with model.record_routing() as rec, torch.no_grad():
        model(batch)
    assert set(rec.indices(1).unique().tolist()) <= {8, 9, 10}
    model.set_routing("none")
    model.save_pretrained(tmp_path / "mx")
    loaded = SpeechLM.from_pretrained(tmp_path / "mx").eval()
    assert loaded.n_added_experts == 3 and loaded.moe_layers()[0].num_experts == 11
    assert loaded.expert_split == model.expert_split
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)


def test_bad_requests():
    model = build_tiny()
    with pytest.raises(ValueError, match="positive"):
        add_speech_experts(model, 0)
    add_speech_experts(model, 1)
    with pytest.raises(ValueError, match="already has 1 added"):
        add_speech_experts(model, 1)
