"""The DeepTalk pipeline as a Prefect flow: a thin shell over ``deeptalk.steps``.

Each step runs as a Prefect task named after the step. Whether it runs is decided by the state of record
(``deeptalk.steps.record``), not by Prefect's result cache: a step is skipped only when its recorded dependencies
(resolved config with presets and run overrides, imported code, data) are today's *and* its outputs on disk are
byte for byte the ones it wrote, so another run's outputs are never taken for this one's. What ran is then recorded
in ``dvc.lock`` too (``dvc commit``), so ``dvc status`` agrees with the flow. Training steps can be sent to the
``gpu`` work pool (see ``flows/deploy.py``). Every parameter is typed and checked before the first step
runs. A failed gate fails the flow before packaging; a refusal (gate, package) is never retried.

In the Prefect UI each task run shows the project's own log lines, a live progress artifact while a step runs
(training: step, loss, ETA), and the gate artifact lists every check with its value and threshold.

    python -m flows.pipeline --stages s2a,s2b,s3 --baselines plain
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from deeptalk.environment import apply_env_defaults

apply_env_defaults()  # PREFECT_HOME, telemetry off: before Prefect reads its settings

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model  # noqa: E402

from deeptalk.config import ProjectConfig, load_config  # noqa: E402
from deeptalk.console import CONSOLE, step_headline, step_line  # noqa: E402
from deeptalk.evaluation.config import GateThresholds  # noqa: E402
from deeptalk.evaluation.gates import GATE_METRICS, GateFailed  # noqa: E402
from deeptalk.steps import DEFAULT_CHAIN, STAGE_STEPS, STEPS, StepSpec, get_step  # noqa: E402
from deeptalk.steps.dvcfile import RESOLVE_STAGE, dvc_commit  # noqa: E402
from deeptalk.steps.package import PackageRefused  # noqa: E402
from deeptalk.steps.record import (  # noqa: E402
    STATE_DIR,
    is_current,
    run_recorded,
    step_record,
    stored_summary,
    write_record,
    write_resolved,
)
from deeptalk.training.config import SPLIT_RULE  # noqa: E402
from deeptalk.training.stages import BASELINES  # noqa: E402
from flows.exchange import Exchange, data_paths  # noqa: E402
from flows.prefect_ui import ProgressWatch, forward_project_logs, publish_artifacts  # noqa: E402
from flows.verdicts import EXPECTED, BadParameters, ProjectBusy, hide_expected_tracebacks  # noqa: E402
from flows.verdicts import report as report_verdict  # noqa: E402

log = logging.getLogger(__name__)

MAIN_CHAIN = tuple(name for name in DEFAULT_CHAIN if name not in ("evaluate", "package"))  # the registry's
TRANSIENT_RETRIES = {"generate_data": 2, "package": 2}  # subprocess TTS and the model store can hiccup
REFUSALS = (PackageRefused, GateFailed)  # verdicts, not hiccups: retrying cannot change them
GPU_POOL = "gpu"
GPU_STEP_DEPLOYMENT = "deeptalk-step/gpu"
GPU_POOL_TIMEOUT_S = 600.0  # a heavy step no gpu worker has picked up by then fails, naming the pool
PROJECT_DIR_ENV = "DEEPTALK_PROJECT_DIR"
STEP_NAMES = tuple(step.name for step in STEPS)

Profile = Literal["tiny", "small", "paper"]
Baseline = Literal[BASELINES]  # type: ignore[valid-type]
StageName = Literal[STEP_NAMES + tuple(STAGE_STEPS)]  # type: ignore[valid-type]
# the thresholds of deeptalk.evaluation.gates, each optional: a flow run overrides only those it names
GateOverrides = create_model(
    "GateOverrides",
    __config__=ConfigDict(extra="forbid"),
    **{name: (float | None, Field(None, description=f"{GATE_METRICS[name][0]} must be "
                                   f"{'<=' if GATE_METRICS[name][1] == 'max' else '>='} this"))
       for name in GateThresholds.__dataclass_fields__},
)
SplitRule = Annotated[str, StringConstraints(pattern=SPLIT_RULE.pattern)]


def step_names(stages: list[str] | None, baselines: list[str] | None) -> list[str]:
    """The steps a run executes, in pipeline order: ``stages`` (step or stage names; default: the main chain,
    evaluate and package), then the baselines' training steps."""
    wanted = {STAGE_STEPS.get(s, s) for s in stages} if stages is not None else {*MAIN_CHAIN, "evaluate", "package"}
    unknown = sorted(wanted - set(STEP_NAMES))
    if unknown:
        raise BadParameters(f"unknown stage(s) {unknown}; choose from {', '.join(STEP_NAMES)} or {', '.join(STAGE_STEPS)}")
    bad = sorted(set(baselines or ()) - set(BASELINES))
    if bad:
        raise BadParameters(f"unknown baseline(s) {bad}; choose from {', '.join(BASELINES)}")
    chain = [name for name in MAIN_CHAIN if name in wanted]
    chain += [f"train_{b}" for b in (baselines or ()) if f"train_{b}" not in chain]
    chain += [name for name in STEP_NAMES if name in wanted and name not in chain and name not in ("evaluate", "package")]
    return chain + [name for name in ("evaluate", "package") if name in wanted]


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures only: a gate failure or a package refusal would fail again."""
    return not isinstance(state.result(raise_on_failure=False), REFUSALS)


@task(cache_policy=NO_CACHE, persist_result=False, retry_delay_seconds=5, retry_condition_fn=_retryable,
      task_run_name="{step_name}")
def run_step(step_name: str, profile: str, params: str, overrides: dict) -> dict:
    """Run one registered step in this process (same function `dvc repro` calls) unless the state of record says
    it is current; ``cached`` in the result says which."""
    forward_project_logs()
    cfg = load_config(params, profile=profile, overrides=overrides)
    with ProgressWatch(step_name, get_run_logger()):
        summary, ran = run_recorded(get_step(step_name), cfg)
    return {**summary, "cached": not ran}


def resolve_run_config(cfg: ProjectConfig) -> None:
    """Write every step's resolved file for this run's config (presets, params.yaml, run overrides), as ``dvc
    repro``'s ``resolve_config`` stage does for params.yaml alone."""
    for step in STEPS:
        write_resolved(step_record(step, cfg), cfg.paths.root)


def _on_gpu_pool(step: StepSpec, cfg: ProjectConfig, params: str, overrides: dict, timeout_s: float) -> dict:
    """Run a heavy step as a ``deeptalk-step`` flow run on the gpu pool, its inputs and outputs travelling
    through the DVC remote; fail when no worker takes it in time."""
    files = Exchange(cfg.paths.root)
    params_rel = os.path.relpath(Path(params).resolve(), cfg.paths.root)
    inputs = files.push(data_paths([*step.data_deps(cfg), params_rel]))
    flow_run = run_deployment(
        GPU_STEP_DEPLOYMENT,
        parameters={"step_name": step.name, "profile": cfg.profile, "params": params_rel, "overrides": overrides,
                    "exchange": {"remote": files.remote_name, "inputs": inputs}},
        flow_run_name=step.name,
        timeout=0,  # returns at once; we wait below, with a deadline for the pickup
    )
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run.id)
            state = flow_run.state
            if state is not None and state.is_final():
                break
            if state is not None and state.is_scheduled() and time.monotonic() > deadline:
                client.set_flow_run_state(flow_run.id, state=_cancelled(), force=True)
                raise TimeoutError(
                    f"no worker of work pool {GPU_POOL!r} picked up step {step.name} within {timeout_s:.0f} s; "
                    f"start one with `prefect worker start --pool {GPU_POOL}` or run without gpu_pool"
                )
            time.sleep(2.0)
    if not state.is_completed():
        raise RuntimeError(f"step {step.name} failed on the {GPU_POOL} pool: {state.message}")
    answer = files.get_record(str(flow_run.id))
    files.pull(answer["outputs"], clear=step.outs)
    summary = {**answer["summary"], "gpu_flow_run": str(flow_run.id)}
    write_record(step_record(step, cfg), cfg, summary)  # computed there from the inputs sent from here
    return summary


def _cancelled():
    from prefect.states import Cancelled

    return Cancelled(message="no worker picked up the run in time")


def _submit(step: StepSpec, cfg: ProjectConfig, params: str, overrides: dict, gpu_pool: bool,
            gpu_pool_timeout_s: float = GPU_POOL_TIMEOUT_S) -> dict:
    """Run ``step`` here (a cached task), or on the gpu pool when ``gpu_pool``."""
    start = time.perf_counter()
    if gpu_pool and is_current(step, cfg):
        summary = stored_summary(cfg.paths.root, step.name) or {"step": step.name}
        log.info("%s", step_line(step.name, time.perf_counter() - start, summary,
                                 "Cached (inputs and outputs as recorded): " + step_headline(summary)),
                 extra=CONSOLE)
        return summary
    if gpu_pool:
        summary = _on_gpu_pool(step, cfg, params, overrides, gpu_pool_timeout_s)
        log.info("%s", step_line(step.name, time.perf_counter() - start, summary,
                                 f"on the {GPU_POOL} pool: {step_headline(summary)}"), extra=CONSOLE)
        return summary
    task_fn = run_step.with_options(
        name=step.name,
        retries=TRANSIENT_RETRIES.get(step.name, 1 if step.heavy else 0),  # training retries resume a checkpoint
    )
    state = task_fn(step.name, cfg.profile, params, overrides, return_state=True)
    summary = state.result()  # raises the step's error
    if summary.pop("cached", False):
        log.info("%s", step_line(step.name, time.perf_counter() - start, summary,
                                 "Cached (inputs and outputs as recorded): " + step_headline(summary)),
                 extra=CONSOLE)
    return summary


@contextlib.contextmanager
def project_lock(root: Path) -> Iterator[None]:
    """Hold the project's run lock (``.deeptalk/run.lock``) for a pipeline run: every run of a project writes the
    same models, reports and records, so a second concurrent run fails at once instead of mixing outputs. (The UI
    deployment queues runs instead: concurrency limit 1, ``flows.deploy``.)"""
    path = Path(root) / STATE_DIR / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise ProjectBusy(f"another pipeline run holds {path} ({handle.read().strip() or 'unknown'}); "
                               "wait for it to end") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def project_dir() -> Path:
    """This machine's project directory: ``$DEEPTALK_PROJECT_DIR`` (set it where a worker is started), else the
    current directory. A worker's flow runs start in a temporary directory, never in the server's: without the
    variable there is no project there, and the run stops instead of training into a temporary directory."""
    root = Path(os.environ.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()
    if not any((root / marker).exists() for marker in ("params.yaml", "dvc.yaml")):
        raise RuntimeError(f"{root} is not a DeepTalk project (no params.yaml or dvc.yaml); start workers with "
                           f"{PROJECT_DIR_ENV}=<project directory>")
    return root


@flow(name="deeptalk-step", flow_run_name="{step_name}", log_prints=True)
def deeptalk_step(step_name: StageName, profile: Profile = "tiny", params: str = "params.yaml",
                  overrides: dict | None = None, exchange: dict | None = None) -> dict:
    """One step as its own flow: what a worker of the gpu pool runs for heavy steps, on any machine.

    Args:
        step_name: the step to run, by step name (train_s2a) or stage name (s2a).
        profile: the scale preset the step runs at.
        params: params file, relative to the project directory ($DEEPTALK_PROJECT_DIR of the worker).
        overrides: config overrides of the pipeline run that sent the step.
        exchange: set by the pipeline: {"remote": DVC remote name or null, "inputs": manifest}; the step's
            inputs are fetched from the DVC remote first and its outputs sent back there.
    """
    forward_project_logs()
    root = project_dir()
    os.chdir(root)  # this flow run's process is the worker's child: the step's relative paths are the project's
    step = get_step(STAGE_STEPS.get(step_name, step_name))
    files = Exchange(root, (exchange or {}).get("remote")) if exchange else None
    if files is not None:
        files.pull(exchange.get("inputs") or {})
    cfg = load_config(root / params, profile=profile, overrides=overrides or {}, root=root)
    summary = _submit(step, cfg, str(root / params), overrides or {}, gpu_pool=False)
    dvc_commit(root, [step.name])
    if files is not None:
        from prefect.runtime import flow_run

        files.put_record(str(flow_run.id), {"summary": summary, "outputs": files.push(step.outs + step.metrics)})
    return summary


def check_parameters(profile: str, params: str, stages: list[str] | None, split_rule: str | None,
                     baselines: list[str] | None, gates: dict | None) -> tuple[ProjectConfig, dict, list[str]]:
    """Everything a run needs, checked before its first step: the config with the run's overrides, and the
    steps to run. Raises ValueError naming what is wrong."""
    overrides: dict = {}
    if split_rule:
        overrides.setdefault("training", {})["split_rule"] = split_rule
    if gates:
        overrides["gates"] = gates
    chain = step_names(stages, baselines)
    try:
        cfg = load_config(params, profile=profile, overrides=overrides)  # validates every section
    except ValueError as err:
        raise BadParameters(str(err)) from err
    return cfg, overrides, chain


@flow(name="deeptalk-pipeline", flow_run_name="deeptalk-{profile}", log_prints=True, validate_parameters=True)
def deeptalk_pipeline(
    profile: Profile = "tiny",
    params: str = "params.yaml",
    stages: list[StageName] | None = None,
    split_rule: SplitRule | None = None,
    baselines: list[Baseline] | None = None,
    gates: GateOverrides | None = None,
    gpu_pool: bool = False,
    gpu_steps: list[StageName] | None = None,
    gpu_pool_timeout_s: float = GPU_POOL_TIMEOUT_S,
) -> dict:
    """Data → codec → text pretrain → S1 → profile → S2a → S2b → S3 (+ baselines) → evaluate → gate → package.

    Args:
        profile: scale preset (configs/profiles): tiny (CPU, minutes), small (hours), paper (GPUs).
        params: params file with deliberate overrides, relative to the project directory.
        stages: steps to run, by step name (train_s2a) or stage name (s2a); default: the main chain, evaluate
            and package.
        split_rule: expert split for this run: adaptive, fixed:N or random:N (default: params.yaml's).
        baselines: baseline stages to train as well: plain, fixed, moextend, strict.
        gates: quality-gate thresholds to override for this run (others keep the profile's).
        gpu_pool: send training steps to the gpu work pool (a worker must serve it; files travel through the
            DVC remote).
        gpu_steps: with gpu_pool, the steps to send there instead of the training steps.
        gpu_pool_timeout_s: how long a step may wait for a gpu worker before the run fails.
    """
    forward_project_logs()
    os.chdir(project_dir())  # in-process: already there; on a worker: its project, not a temporary directory
    gate_values = gates.model_dump(exclude_none=True) if isinstance(gates, BaseModel) else dict(gates or {})
    cfg, overrides, chain = check_parameters(profile, params, stages, split_rule, baselines, gate_values)
    with project_lock(cfg.paths.root):
        return _run_chain(cfg, params, overrides, chain, gpu_pool, gpu_steps, gpu_pool_timeout_s)


def _run_chain(cfg: ProjectConfig, params: str, overrides: dict, chain: list[str], gpu_pool: bool,
               gpu_steps: list[str] | None, gpu_pool_timeout_s: float) -> dict:
    logger = get_run_logger()
    to_gpu = {STAGE_STEPS.get(s, s) for s in gpu_steps} if gpu_steps is not None else \
        {name for name in chain if get_step(name).heavy}
    if gpu_pool:
        _check_gpu_deployment()
        Exchange(cfg.paths.root)  # the DVC remote the steps' files travel through: configured, or fail now
    resolve_run_config(cfg)
    logger.info("running %d steps at profile %s: %s", len(chain), cfg.profile, ", ".join(chain))
    summaries = {}
    try:
        for name in chain:
            step = get_step(name)
            if name == "evaluate":
                try:
                    summaries[name] = _submit(step, cfg, params, overrides, gpu_pool=False)
                finally:
                    publish_artifacts(cfg)
            else:
                summaries[name] = _submit(step, cfg, params, overrides, gpu_pool and name in to_gpu - {"package"},
                                          gpu_pool_timeout_s)
    finally:  # what completed, also when a later step failed: dvc.lock agrees with the records (one DVC call)
        dvc_commit(cfg.paths.root, [RESOLVE_STAGE, *summaries])
    logger.info("pipeline done: %s", ", ".join(summaries))
    return summaries


def _check_gpu_deployment() -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(GPU_STEP_DEPLOYMENT)
        except Exception as err:  # ObjectNotFound: no deployments registered on this server
            raise ValueError(f"gpu_pool needs the deployment {GPU_STEP_DEPLOYMENT!r} "
                             f"(python -m flows.deploy registers it)") from err


def run_pipeline_and_serve(profile: str | None = None, params: str = "params.yaml", verbose: bool = False) -> int:
    """``make run``: the whole flow, then the packaged model served over HTTP and its answers judged (exit 1
    when a call or a gate of ``flows.smoke`` fails). The console gets one line per step and a
    summary of at most 30 lines; ``reports/run.log`` the full log, ``reports/run_summary.json`` every number."""
    from deeptalk.console import setup_console
    from flows.smoke import serve_and_check
    from flows.summary import print_summary, write_summary

    try:
        cfg = load_config(params, profile=profile)
    except ValueError as err:
        return report_verdict(BadParameters(str(err)))
    log_file = setup_console(cfg.paths.reports / "run.log", verbose=verbose)
    hide_expected_tracebacks()
    log.info("DeepTalk %s: pipeline (full log: %s)", cfg.profile, log_file, extra=CONSOLE)
    try:
        summaries = deeptalk_pipeline(profile=cfg.profile, params=params)
    except EXPECTED as err:  # a verdict, not a crash: what failed and what to do; the traceback in run.log
        return report_verdict(err, log_file)
    log.info("serving the packaged model and asking it the held-out questions", extra=CONSOLE)
    result = serve_and_check(cfg)
    path = write_summary(cfg, summaries, result)
    print_summary(cfg, summaries, result, path, log_file)
    return 0 if result["ok"] else 1


__all__ = ["deeptalk_pipeline", "deeptalk_step", "run_pipeline_and_serve", "STEP_NAMES", "STAGE_STEPS"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from deeptalk.console import setup_console

    parser = argparse.ArgumentParser(description="Run the DeepTalk pipeline flow (Prefect)")
    parser.add_argument("--profile", default=None, choices=("tiny", "small", "paper"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--stages", default=None, help="comma-separated step or stage names (default: all)")
    parser.add_argument("--baselines", default=None, help="comma-separated: " + ",".join(BASELINES))
    parser.add_argument("--split-rule", default=None, help="adaptive | fixed:N | random:N")
    parser.add_argument("--gpu-pool", action="store_true", help="send training steps to the gpu work pool")
    parser.add_argument("--verbose", action="store_true", help="every log line on the terminal")
    args = parser.parse_args(argv)
    split = (lambda text: text.split(",") if text else None)
    try:
        profile = args.profile or load_config(args.params).profile
        log_file = setup_console(load_config(args.params, profile=profile).paths.reports / "run.log",
                                 verbose=args.verbose)
    except ValueError as err:
        return report_verdict(BadParameters(str(err)))
    hide_expected_tracebacks()
    try:
        summaries = deeptalk_pipeline(
            profile=profile, params=args.params, stages=split(args.stages),
            baselines=split(args.baselines), split_rule=args.split_rule, gpu_pool=args.gpu_pool,
        )
    except EXPECTED as err:
        return report_verdict(err, log_file)
    log.info("done: %s", ", ".join(summaries), extra=CONSOLE)
    log.debug("%s", json.dumps(summaries, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
