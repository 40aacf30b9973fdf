"""Gradient accumulation and precision in the DeepSpeed loop (in-process, single rank, real engine)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from deeptalk.training import distributed
from deeptalk.training.config import StageBudget
from deeptalk.training.loop import LoopConfig, StepResult, deepspeed_config, train


class Regression:
    """Linear regression, no randomness in the loss; micro-batch i is ``rows`` seeded rows, or the
    concatenation of ``merge`` consecutive ones (what accumulation over ``merge`` micro-batches must equal)."""

    def __init__(self, rows: int = 4, merge: int = 1) -> None:
        self.rows, self.merge = rows, merge

    def _rows(self, i: int) -> torch.Tensor:
        return torch.randn(self.rows, 8, generator=torch.Generator().manual_seed(1000 + i))

    def batch(self, step: int) -> torch.Tensor:
        return torch.cat([self._rows(step * self.merge + j) for j in range(self.merge)])

    def forward(self, module: nn.Module, batch: torch.Tensor) -> StepResult:
        target = batch.float().sum(dim=1, keepdim=True)
        loss = ((module(batch.to(next(module.parameters()).dtype)).float() - target) ** 2).mean()
        return StepResult(loss=loss, stream_losses={}, tokens=batch.shape[0])

    def interval_metrics(self) -> dict:
        return {}

    def export(self, module: nn.Module, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.clone() for k, v in module.state_dict().items()}, out_dir / "weights.pt")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 1))


def _train(tmp: Path, model: nn.Module, program: Regression, **loop) -> dict:
    cfg = LoopConfig(**{"steps": 3, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 100, "log_every": 1,
                        "deepspeed_config": "zero2", **loop})
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    train(model, groups, program, cfg, tmp / "out", tmp / "ckpt", distributed.init(device="cpu"), desc="t")
    return torch.load(tmp / "out" / "weights.pt")


def test_global_batch_is_micro_times_accumulation_times_ranks():
    budget = StageBudget(steps=7000, batch_size=14, lr=1e-4, max_len=1200, grad_accum=4)
    assert budget.global_batch(8) == 448  # the reference's S2a
    loop = LoopConfig(steps=10, batch_size=14, lr=1e-4, grad_accum=4)
    cfg = deepspeed_config(loop, world_size=8, device=torch.device("cpu"))
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"], cfg["train_batch_size"]) == (
        14, 4, 448)
    with pytest.raises(ValueError, match="grad_accum"):
        StageBudget(steps=1, batch_size=1, lr=1e-4, grad_accum=0)
    with pytest.raises(ValueError, match="grad_accum"):
        LoopConfig(steps=1, batch_size=1, lr=1e-4, grad_accum=0)


def test_accumulating_two_micro_batches_equals_one_batch_of_both(tmp_path):
    accumulated = _train(tmp_path / "a", _model(), Regression(rows=4), grad_accum=2)
    merged = _train(tmp_path / "b", _model(), Regression(rows=4, merge=2), batch_size=8)
    untouched = _model().state_dict()
    for key in merged:
        assert not torch.equal(merged[key], untouched[key])
        assert torch.allclose(accumulated[key], merged[key], atol=1e-6), key
    # and it is not the same as taking every micro-batch as its own step
    separate = _train(tmp_path / "c", _model(), Regression(rows=4), steps=6)
    assert not all(torch.allclose(separate[k], merged[k], atol=1e-4) for k in merged)


def test_bf16_weights_with_deepspeed_bf16_off_train_in_fp32(tmp_path, caplog):
    """The paper checkpoint is bf16; with bf16 off (here: CPU) frozen bf16 next to fp32 trainable parameters
    used to fail in the first matmul. The loop casts to one dtype and says so."""
    model = _model().to(torch.bfloat16)
    model[0].requires_grad_(False)  # frozen, as most of a speech stage is
    frozen_before = model[0].weight.detach().float().clone()
    with caplog.at_level(logging.WARNING, logger="deeptalk.training.loop"):
        weights = _train(tmp_path, model, Regression(), bf16=True)  # bf16 is honoured on CUDA only
    assert "training in fp32" in caplog.text and "training.bf16" in caplog.text
    assert {v.dtype for v in weights.values()} == {torch.float32}
    assert torch.equal(weights["0.weight"], frozen_before)  # bf16 -> fp32 is exact; frozen stays frozen


def test_paper_preset_uses_the_reference_batch_shapes(tmp_path):
    from deeptalk.config import load_config

    t = load_config(tmp_path / "params.yaml", profile="paper").training
    assert (t.s2a.batch_size, t.s2a.grad_accum) == (14, 4)  # paper.md §3: 14 x 4 x 8 GPUs
    assert [t.budget(s).global_batch(8) for s in ("s1", "s2a", "s2b", "s3")] == [144, 448, 160, 256]
