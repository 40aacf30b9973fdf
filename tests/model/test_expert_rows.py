"""Trainable expert rows as own parameters: the same training as masked fused tensors, Adam state for the
trainable rows only, the stock state dict."""

from __future__ import annotations

import copy

import pytest
import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.model.expert_rows import RowTrainableExperts, separate_trainable_experts
from deeptalk.model.freezing import apply_trainable, count_trainable
from deeptalk.model.switches import ParamGroup
from deeptalk.model.speech_lm import SpeechLM

from .conftest import LAYOUT, build_tiny

SPLIT = ExpertSplit([[0, 1, 5], [2, 3, 4, 7]])
GROUPS = [ParamGroup.SPEECH_EXPERTS, ParamGroup.EMBEDDINGS]


def _state_elements(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.ndim)


def _train(model, groups, steps: int = 3) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)
    for step in range(steps):
        ids = torch.randint(0, LAYOUT.text_vocab_size, (2, 12), generator=torch.Generator().manual_seed(step))
        loss = model.backbone(input_ids=ids).logits.float().pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("impl", ["eager", "sorted_mm"])
def test_rows_train_exactly_like_masked_fused_experts_with_a_fraction_of_the_state(impl):
    masked = build_tiny(experts_implementation=impl)
    rows = copy.deepcopy(masked)
    start = copy.deepcopy(masked.state_dict())
    masked_opt = _train(masked, apply_trainable(masked, GROUPS, SPLIT))
    groups = apply_trainable(rows, GROUPS, SPLIT)
    trainable = count_trainable(rows)
    groups = separate_trainable_experts(rows, groups)
    assert all(isinstance(moe.experts, RowTrainableExperts) for moe in rows.moe_layers())
    assert count_trainable(rows) == trainable
    rows_opt = _train(rows, groups)

    got, want = rows.state_dict(), masked.state_dict()
    assert got.keys() == want.keys()  # the stock names: no row parameters in exports or checkpoints
    assert all(torch.equal(got[k], want[k]) for k in want)
    for i, moe in enumerate(rows.moe_layers()):
        text = [e for e in range(8) if e not in SPLIT.speech[i]]
        key = f"backbone.model.layers.{moe.layer_idx}.mlp.experts.down_proj"
        assert torch.equal(got[key][text], start[key][text]) and not torch.equal(got[key], start[key])
    # Adam holds two moments per trainable element: the fused tensors' frozen rows no longer count
    assert _state_elements(rows_opt) == 2 * trainable < _state_elements(masked_opt)


def test_row_model_loads_a_stock_state_dict_and_saves_the_current_rows(tmp_path):
    model = build_tiny(experts_implementation="sorted_mm")
    other = build_tiny(seed=3, experts_implementation="sorted_mm")
    separate_trainable_experts(model, apply_trainable(model, GROUPS, SPLIT))
    model.load_state_dict(other.state_dict())  # rows rebuilt from the fused tensors
    experts = model.moe_layers()[0].experts
    speech = list(SPLIT.speech[0])
    assert torch.equal(experts.gate_up_rows, other.moe_layers()[0].experts.gate_up_proj[speech])
    with torch.no_grad():
        experts.down_rows.add_(1.0)  # an optimizer step
    model.save_pretrained(tmp_path / "m")
    saved = SpeechLM.from_pretrained(tmp_path / "m").moe_layers()[0].experts.down_proj
    assert torch.equal(saved[speech], experts.down_rows) and torch.equal(saved[3], experts.down_proj[3])


@pytest.mark.slow  # DeepSpeed's engine (its comm op loads in minutes on a busy machine)
def test_deepspeed_checkpoint_of_a_row_model_resumes_to_the_same_weights(tmp_path):
    import deepspeed

    from deeptalk.training import distributed

    distributed.init(device="cpu")

    def engine():
        model = build_tiny(experts_implementation="sorted_mm").train()
        groups = separate_trainable_experts(model, apply_trainable(model, GROUPS, SPLIT))
        config = {"train_micro_batch_size_per_gpu": 1, "train_batch_size": 1, "zero_optimization": {"stage": 2},
                  "steps_per_print": 10**9}
        return model, deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(groups, lr=1e-2),
                                           config=config)[0]

    def step(model, eng, i):
        ids = torch.randint(0, LAYOUT.text_vocab_size, (1, 12), generator=torch.Generator().manual_seed(i))
        eng.backward(model.backbone(input_ids=ids).logits.float().pow(2).mean())
        eng.step()

    first, eng = engine()
    for i in range(2):
        step(first, eng, i)
    eng.save_checkpoint(str(tmp_path), tag="t")  # module state without row parameters, ZeRO partitions of them
    for i in range(2, 4):
        step(first, eng, i)
    second, eng2 = engine()
    eng2.load_checkpoint(str(tmp_path), tag="t")
    for i in range(2, 4):
        step(second, eng2, i)
    want, got = first.state_dict(), second.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
