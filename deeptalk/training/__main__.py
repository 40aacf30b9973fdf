"""Multi-process entry point: ``deepspeed --num_gpus N --module deeptalk.training --stage s2a [--profile paper]``
(DeepSpeed's runner takes ``--module``, not ``-m``; or ``torchrun --nproc_per_node N -m deeptalk.training …``).
The launcher's ``--local_rank`` is accepted. Single-process runs go through ``python -m deeptalk step train_s2a``."""

from __future__ import annotations

import argparse
import json
import logging
import os


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeptalk.training", description=__doc__)
    parser.add_argument("--stage", required=True, help="text_pretrain, s1, s2a, s2b, s3, or a baseline")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from deeptalk.config import load_config
    from deeptalk.runtime import setup_threads
    from deeptalk.training.runner import run_stage

    cfg = load_config(args.params, profile=args.profile)
    setup_threads(cfg.threads)
    summary = run_stage(args.stage, cfg, local_rank=args.local_rank)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
