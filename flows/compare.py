"""The comparison as a Prefect flow: one task per step of :class:`flows.comparison.Comparison`.

The data chain, each seed's shared start (base, S1, expert split) and every system × seed unit are their own
task runs, named after what they compute, so the UI shows which units are done, their wall time and logs; what
is skipped or reused is decided by the state of record and the unit files (``flows.comparison``), never by Prefect's
result cache. Reports are rewritten after every unit. Registered by ``make ui`` as ``deeptalk-compare/compare``.

    python -m flows.compare --profile small --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Annotated, Literal

from deeptalk.environment import apply_env_defaults

apply_env_defaults()  # PREFECT_HOME, telemetry off: before Prefect reads its settings

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from pydantic import Field  # noqa: E402

from deeptalk.config import load_config  # noqa: E402
from deeptalk.runtime import setup_threads  # noqa: E402
from deeptalk.training.stages import BASELINES  # noqa: E402
from flows.comparison import Comparison  # noqa: E402
from flows.pipeline import project_dir  # noqa: E402
from flows.prefect_ui import forward_project_logs  # noqa: E402

Profile = Literal["tiny", "small", "paper"]
System = Literal[BASELINES]  # type: ignore[valid-type]


@task(task_run_name="compare-data", cache_policy=NO_CACHE)  # the state of record and the unit files decide reuse
def data_task(comparison: Comparison) -> dict:
    forward_project_logs()
    return comparison.prepare_data()


@task(task_run_name="seed{seed}-base-s1-split", cache_policy=NO_CACHE)  # the state of record and the unit files decide reuse
def seed_task(comparison: Comparison, seed: int) -> dict:
    forward_project_logs()
    return comparison.prepare_seed(seed)


@task(task_run_name="seed{seed}-{system}", cache_policy=NO_CACHE)  # the state of record and the unit files decide reuse
def unit_task(comparison: Comparison, seed: int, system: str) -> dict:
    forward_project_logs()
    unit = comparison.run_unit(seed, system)
    return {"system": system, "seed": seed, "unit_wall_s": unit["unit_wall_s"],
            "drop_pct": unit["metrics"].get("text", {}).get("drop_pct")}


@flow(name="deeptalk-compare", log_prints=False)
def deeptalk_compare(
    profile: Profile = "small",
    seeds: Annotated[list[int], Field(min_length=1)] = [0, 1, 2],  # noqa: B006 (Prefect copies parameters)
    systems: list[System] | None = None,
    curve_every: Annotated[int, Field(ge=1)] | None = None,
    params: str = "params.yaml",
) -> dict:
    """Every system × seed as a cached, resumable unit; reports/compare.{md,json,html} after each unit.

    Args:
        profile: scale preset (configs/profiles): tiny (minutes, a smoke), small (the table), paper (GPUs).
        seeds: training seeds; every system trains once per seed from that seed's base and S1.
        systems: baselines and ablations to train beside deeptalk (default: the profile's training.baselines).
        curve_every: curve snapshot every N optimizer steps of a phase (default: ~4 over DeepTalk's chain).
        params: params file with deliberate overrides, relative to the project directory.
    """
    start = time.perf_counter()
    os.chdir(project_dir())  # on a worker: its project directory
    cfg = load_config(params, profile=profile)
    setup_threads(cfg.threads)
    comparison = Comparison(cfg, list(seeds), list(systems) if systems is not None else None, curve_every)
    data_task(comparison)
    for seed in comparison.seeds:
        seed_task(comparison, seed)
        for system in comparison.systems:
            unit_task(comparison, seed, system.name)
    result = comparison.write()
    return {"claim": result["claim"]["statement"], "wall_s": round(time.perf_counter() - start, 1),
            "reports": "reports/compare.{md,json,html}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--systems", default=None)
    parser.add_argument("--curve-every", type=int, default=None)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    out = deeptalk_compare(profile=args.profile, seeds=[int(s) for s in args.seeds.split(",")],
                           systems=args.systems.split(",") if args.systems else None, curve_every=args.curve_every,
                           params=args.params)
    print(f"{out['claim']}\ncompare wall time: {out['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
