"""The shells' command line: ``python -m flows {run,compare,ui}``.

``run`` is ``make run``: the pipeline flow end to end, then the packaged model served and its answers judged;
``compare`` trains and evaluates DeepTalk against the baselines (the paper's table); ``ui`` starts a Prefect
server and a worker and registers the deployments of ``prefect.yaml`` (``make ui``). The steps themselves are
``python -m deeptalk step NAME``, what ``dvc.yaml`` calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deeptalk.console import setup_console
from deeptalk.environment import apply_env_defaults


def _cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import run_pipeline_and_serve

    return run_pipeline_and_serve(profile=args.profile, params=args.params, verbose=args.verbose)


def _cmd_compare(args: argparse.Namespace) -> int:
    from deeptalk.config import load_config
    from deeptalk.runtime import setup_threads
    from flows.comparison import run_compare

    cfg = load_config(args.params, profile=args.profile)
    setup_threads(cfg.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    result = run_compare(cfg, seeds, systems, curve_every=args.curve_every)
    report = Path(cfg.paths.reports) / "compare.md"
    print(report.read_text() if report.is_file() else "")
    print(f"{result['claim']['statement']}\ncompare wall time: {result['wall_s']:.0f} s "
          f"({len(seeds)} seeds x {len(result['summary'])} systems); reports/compare.{{md,json,html}}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from flows.deploy import main as serve_ui

    return serve_ui(["--port", str(args.port), "--profile", args.profile or "tiny"])


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    common.add_argument("--profile", default=None, help="tiny | small | paper (default: params.yaml's)")
    common.add_argument("--verbose", action="store_true", help="every log line (libraries too) on the terminal")
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="whole pipeline via Prefect, then serve and test").set_defaults(
        func=_cmd_run)
    compare = sub.add_parser("compare", parents=[common], help="DeepTalk vs baselines: seeds, curve, matched quality")
    compare.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    compare.add_argument("--systems", default=None,
                         help="comma-separated baselines/ablations beside deeptalk (default: training.baselines)")
    compare.add_argument("--curve-every", type=int, default=None,
                         help="curve snapshot every N steps of a phase (default: training.curve_every, else ~4 "
                              "per DeepTalk chain)")
    compare.set_defaults(func=_cmd_compare)
    ui = sub.add_parser("ui", parents=[common], help="Prefect server + cpu worker + the deployments of prefect.yaml")
    ui.add_argument("--port", type=int, default=4200)
    ui.set_defaults(func=_cmd_ui)
    args = parser.parse_args(argv)
    apply_env_defaults()
    setup_console(verbose=args.verbose)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
