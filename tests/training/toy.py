"""A small generic model + program for runner tests (no speech model needed), runnable as a script."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from deeptalk.training import distributed
from deeptalk.training.loop import LoopConfig, StepResult, train


class ToyProgram:
    """Regression on batches that are a pure function of the step; optionally stalls at one step."""

    def __init__(self, seed: int = 0, stall_at: int | None = None, marker: Path | None = None) -> None:
        self.seed, self.stall_at, self.marker = seed, stall_at, marker
        self.target = torch.randn(8, 1, generator=torch.Generator().manual_seed(seed + 1))

    def batch(self, step: int) -> torch.Tensor:
        if self.stall_at is not None and step == self.stall_at:
            self.marker.write_text(str(step))
            time.sleep(600)  # the test kills us here
        return torch.randn(4, 8, generator=torch.Generator().manual_seed(self.seed * 100_003 + step))

    def forward(self, module: nn.Module, batch: torch.Tensor) -> StepResult:
        out = module(batch)
        noise = torch.randn_like(out) * 0.01  # consumes the torch RNG: resume must restore it
        loss = ((out - batch @ self.target + noise) ** 2).mean()
        return StepResult(loss=loss, stream_losses={"mse": float(loss.detach())}, tokens=batch.shape[0])

    def interval_metrics(self) -> dict:
        return {}

    def export(self, module: nn.Module, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), out_dir / "weights.pt")


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def run(out: Path, steps: int, every: int, stall_at: int | None = None, zero: str = "zero2") -> dict:
    dist = distributed.init()
    model = toy_model()
    loop = LoopConfig(steps=steps, batch_size=4, lr=1e-2, checkpoint_every=every, log_every=2,
                      deepspeed_config=zero, keep_checkpoints=2)
    program = ToyProgram(stall_at=stall_at, marker=out / "stalled")
    groups = [{"params": [p for p in model.parameters()]}]
    return train(model, groups, program, loop, out / "model", out / "checkpoints", dist, desc="toy")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--stall-at", type=int, default=None)
    parser.add_argument("--zero", default="zero2")
    args = parser.parse_args()
    os.environ.setdefault("DEEPTALK_THREADS", "1")
    torch.set_num_threads(1)
    run(args.out, args.steps, args.every, args.stall_at, args.zero)
