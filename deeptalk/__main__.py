"""Command line: ``python -m deeptalk {step,run,compare,dvc-yaml}``.

``step`` is what ``dvc.yaml`` calls; ``run`` drives the Prefect pipeline flow end to end; ``compare`` trains
and evaluates DeepTalk against the baselines (the paper's table at small scale).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _config(args: argparse.Namespace):
    from deeptalk.config import load_config

    return load_config(args.params, profile=args.profile)


def _cmd_step(args: argparse.Namespace) -> int:
    from deeptalk.runtime import setup_threads
    from deeptalk.steps import STEPS

    cfg = _config(args)
    setup_threads(cfg.threads)
    matches = [s for s in STEPS if s.module == args.name and all(s.args.get(k) == v for k, v in _extra(args).items())]
    if not matches:
        raise SystemExit(f"unknown step {args.name!r} with {_extra(args)}; steps: {sorted({s.module for s in STEPS})}")
    summary = matches[0].run(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _extra(args: argparse.Namespace) -> dict:
    return {"stage": args.stage} if args.stage else {}


def _cmd_run(args: argparse.Namespace) -> int:
    from deeptalk.flows.pipeline import run_pipeline_and_serve

    return run_pipeline_and_serve(profile=args.profile, params=args.params)


def _cmd_compare(args: argparse.Namespace) -> int:
    from deeptalk.evaluation.compare import run_compare
    from deeptalk.runtime import setup_threads

    cfg = _config(args)
    setup_threads(cfg.threads)
    result = run_compare(cfg)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from deeptalk.steps.dvcfile import render

    text = render()
    if args.write:
        Path("dvc.yaml").write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    common.add_argument("--profile", default=None, help="tiny | small | paper (default: params.yaml's)")
    common.add_argument("--log-level", default="INFO")
    parser = argparse.ArgumentParser(prog="python -m deeptalk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    step = sub.add_parser("step", parents=[common], help="run one pipeline step (what dvc.yaml calls)")
    step.add_argument("name")
    step.add_argument("--stage", default=None, help="stage name for train_stage (s2a, s2b, s3, plain, …)")
    step.set_defaults(func=_cmd_step)
    sub.add_parser("run", parents=[common], help="whole pipeline via Prefect, then serve and test").set_defaults(
        func=_cmd_run
    )
    sub.add_parser("compare", parents=[common], help="DeepTalk vs baselines table").set_defaults(func=_cmd_compare)
    dvc = sub.add_parser("dvc-yaml", parents=[common], help="print (or --write) dvc.yaml from the step registry")
    dvc.add_argument("--write", action="store_true")
    dvc.set_defaults(func=_cmd_dvc_yaml)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
