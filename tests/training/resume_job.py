"""Train the tiny speech LM's S2a phase on synthetic batches; ``--stall-at N`` hangs at step N (to be killed).

Runs as one process or under a launcher (torchrun / ``deepspeed --module``); ``--zero zero3`` partitions it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.training import distributed, runner
from deeptalk.training.stages import get_stage
from tests.training.helpers import LAYOUT, save_tiny_model, synthetic_batches, tiny_cfg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--stall-at", type=int, default=None)
    parser.add_argument("--zero", default="zero2")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None)  # the deepspeed launcher's
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    cfg = tiny_cfg(args.root, steps=args.steps, checkpoint_every=2)
    budget = dataclasses.replace(cfg.training.s2a, grad_accum=args.grad_accum)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, s2a=budget, deepspeed_config=args.zero))
    dist = distributed.init(args.local_rank, device="cpu")
    if dist.is_main and not (cfg.paths.stage("s1") / "speech_lm.json").exists():
        save_tiny_model(cfg, cfg.paths.stage("s1"))
        ExpertSplit([[0, 1, 5], [2, 3, 4, 7]]).to_json(cfg.paths.expert_split)
    distributed.barrier()
    batches = synthetic_batches(cfg, seed=11)

    def maybe_stall(step: int):
        if step == args.stall_at:
            (args.root / "stalled").write_text(str(step))
            time.sleep(600)
        return batches(step)

    plan = get_stage("s2a")
    runner.train_phase(plan.phases[0], plan, cfg, dist, maybe_stall, LAYOUT, "synthetic")


if __name__ == "__main__":
    main()
