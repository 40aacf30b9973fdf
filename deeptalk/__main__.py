"""The library's command line: ``python -m deeptalk {step,dvc-yaml,resolve-config}``, what ``dvc.yaml`` calls.

The shells have their own: ``python -m flows run`` (``make run``: the Prefect pipeline end to end, then the
served check) and ``python -m flows compare`` (the paper's comparison); the library never imports them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deeptalk.console import setup_console
from deeptalk.environment import apply_env_defaults


def _config(args: argparse.Namespace):
    from deeptalk.config import load_config

    return load_config(args.params, profile=args.profile)


def _cmd_step(args: argparse.Namespace) -> int:
    from deeptalk.runtime import setup_threads
    from deeptalk.steps import STEPS, find_step

    if args.list:
        print("\n".join(f"{s.name:<16} {s.module}{' --stage ' + s.args['stage'] if 'stage' in s.args else ''}"
                        for s in STEPS))
        return 0
    if not args.name:
        raise SystemExit("name a step (python -m deeptalk step --list shows them)")
    from deeptalk.steps.record import run_recorded

    step = find_step(args.name, args.stage)
    cfg = _config(args)
    setup_threads(cfg.threads)
    summary, _ = run_recorded(step, cfg, force=True)  # asked for (or DVC found it stale): run, then record it
    logging.getLogger("deeptalk").info("summary of %s: %s", step.name, json.dumps(summary, default=str))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from deeptalk.steps.dvcfile import render

    for path, text in render(_config(args)).items():
        if args.write:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        else:
            sys.stdout.write(f"# ---- {path}\n{text}")
    return 0


def _cmd_resolve_config(args: argparse.Namespace) -> int:
    """What ``dvc repro`` runs first: every step's resolved file from params.yaml, presets, profile and code."""
    from deeptalk.steps import STEPS
    from deeptalk.steps.dvcfile import render
    from deeptalk.steps.record import step_record, write_resolved

    cfg = _config(args)
    files = {Path(cfg.paths.root) / path: text for path, text in render(cfg).items()}
    stale = [str(path) for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if stale:
        raise SystemExit(f"{', '.join(stale)} no longer match(es) this config (e.g. evaluation.stage changed which "
                         "model is evaluated): run `python -m deeptalk dvc-yaml --write`, then `dvc repro` again")
    for step in STEPS:
        write_resolved(step_record(step, cfg), cfg.paths.root)
    logging.getLogger("deeptalk").info("resolved the config of %d steps (profile %s)", len(STEPS), cfg.profile)
    return 0


MOVED = ("run", "compare")  # the shells' commands: python -m flows run | compare


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MOVED:
        raise SystemExit(f"`python -m deeptalk {argv[0]}` is `python -m flows {argv[0]}` now (the Prefect shells "
                         "live in flows/; `make run` calls it)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    common.add_argument("--profile", default=None, help="tiny | small | paper (default: params.yaml's)")
    common.add_argument("--log-level", default="INFO")
    common.add_argument("--verbose", action="store_true", help="every log line (libraries too) on the terminal")
    parser = argparse.ArgumentParser(prog="python -m deeptalk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    step = sub.add_parser("step", parents=[common], help="run one pipeline step (what dvc.yaml calls)")
    step.add_argument("name", nargs="?", help="step (train_s2a), stage (s2a) or module with --stage")
    step.add_argument("--stage", default=None, help="stage name for train_stage (s2a, s2b, s3, plain, …)")
    step.add_argument("--list", action="store_true", help="list the steps")
    step.add_argument("--json", action="store_true", help="print the step's summary as JSON")
    step.set_defaults(func=_cmd_step)
    dvc = sub.add_parser("dvc-yaml", parents=[common],
                         help="print (or --write) dvc.yaml and baselines/dvc.yaml from the step registry")
    dvc.add_argument("--write", action="store_true")
    dvc.set_defaults(func=_cmd_dvc_yaml)
    sub.add_parser("resolve-config", parents=[common],
                   help="write each step's resolved config + code hashes (.deeptalk/resolved; dvc repro runs it)"
                   ).set_defaults(func=_cmd_resolve_config)
    args = parser.parse_args(argv)
    apply_env_defaults()
    setup_console(verbose=args.verbose, level=args.log_level)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
