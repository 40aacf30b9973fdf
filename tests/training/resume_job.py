"""Train the tiny speech LM's S2a phase on synthetic batches; ``--stall-at N`` hangs at step N (to be killed)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.training import distributed, runner
from deeptalk.training.stages import get_plan
from tests.training.helpers import LAYOUT, save_tiny_model, synthetic_batches, tiny_cfg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--stall-at", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    cfg = tiny_cfg(args.root, steps=args.steps, checkpoint_every=2)
    if not (cfg.paths.stage("s1") / "speech_lm.json").exists():
        save_tiny_model(cfg, cfg.paths.stage("s1"))
        ExpertSplit([[0, 1, 5], [2, 3, 4, 7]]).to_json(cfg.paths.expert_split)
    batches = synthetic_batches(cfg, seed=11)

    def maybe_stall(step: int):
        if step == args.stall_at:
            (args.root / "stalled").write_text(str(step))
            time.sleep(600)
        return batches(step)

    plan = get_plan("s2a", cfg.training)
    runner.train_phase(plan.phases[0], plan, cfg, distributed.init(), maybe_stall, LAYOUT, "synthetic")


if __name__ == "__main__":
    main()
