"""The DeepTalk pipeline as a Prefect flow: a thin shell over ``deeptalk.steps``.

Each step runs as a Prefect task whose cache key hashes exactly what ``dvc.yaml`` declares for it (input files,
params sections), so an unchanged step is skipped; a step whose outputs went missing is re-run. Training steps
can be sent to a ``gpu`` work pool (see ``deeptalk/flows/deploy.py``). A failed gate fails the flow before packaging.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext
from prefect.deployments import run_deployment

from deeptalk.config import ProjectConfig, load_config
from deeptalk.steps import STEPS, StepSpec, get_step
from deeptalk.flows.hashing import step_fingerprint


MAIN_CHAIN = ("generate_data", "validate_data", "fit_codec", "prepare_encoder", "encode", "pack",
              "text_pretrain", "align", "profile_experts", "train_s2a", "train_s2b", "train_s3")
TRANSIENT_RETRIES = {"generate_data": 2, "package": 2}  # subprocess TTS and the model store can hiccup
GPU_STEP_DEPLOYMENT = "deeptalk-step/gpu"
STEP_NAMES = tuple(step.name for step in STEPS)


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    cfg = load_config(parameters["params"], profile=parameters["profile"], overrides=parameters["overrides"])
    return step_fingerprint(get_step(parameters["step_name"]), cfg)


@task(cache_key_fn=_cache_key, persist_result=True, retry_delay_seconds=5)
def run_step(step_name: str, profile: str, params: str, overrides: dict) -> dict:
    """Run one registered step in this process (same function `dvc repro` calls)."""
    cfg = load_config(params, profile=profile, overrides=overrides)
    return get_step(step_name).run(cfg)


def _outputs_present(step: StepSpec, cfg: ProjectConfig) -> bool:
    return all((cfg.paths.root / out).exists() for out in step.outs + step.metrics)


def _submit(step: StepSpec, cfg: ProjectConfig, params: str, overrides: dict, gpu_pool: bool) -> dict:
    if gpu_pool and step.heavy:
        flow_run = run_deployment(
            GPU_STEP_DEPLOYMENT,
            parameters={"step_name": step.name, "profile": cfg.profile, "params": params, "overrides": overrides},
        )
        if not flow_run.state.is_completed():
            raise RuntimeError(f"step {step.name} failed on the gpu pool: {flow_run.state.message}")
        return {"step": step.name, "gpu_flow_run": str(flow_run.id)}
    task_fn = run_step.with_options(
        name=step.name,
        retries=TRANSIENT_RETRIES.get(step.name, 1 if step.heavy else 0),  # training retries resume a checkpoint
        refresh_cache=not _outputs_present(step, cfg),
    )
    return task_fn(step.name, cfg.profile, params, overrides)


@flow(name="deeptalk-step", log_prints=True)
def deeptalk_step(step_name: str, profile: str = "tiny", params: str = "params.yaml", overrides: dict | None = None):
    """One step as its own flow: what a GPU worker runs for heavy steps."""
    return run_step(step_name, profile, params, overrides or {})


def _publish_artifacts(cfg: ProjectConfig) -> None:
    metrics_path, gate_path = cfg.paths.metrics, cfg.paths.reports / "gate.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        rows = [{"metric": key, "value": value} for key, value in _flatten(metrics).items()]
        create_table_artifact(rows, key="deeptalk-metrics", description="reports/metrics.json")
    if gate_path.exists():
        gate = json.loads(gate_path.read_text())
        lines = [f"# Gate: {'PASSED' if gate.get('passed') else 'FAILED'}", ""]
        lines += [f"- `{f.get('metric')}` = {f.get('value')} (threshold {f.get('threshold')}): {f.get('message', '')}"
                  for f in gate.get("failures", [])]
        report = cfg.paths.reports / "index.html"
        images = sorted((cfg.paths.reports / "profile").glob("*.png")) if (cfg.paths.reports / "profile").exists() else []
        lines += ["", f"Report: [{report}]({report.resolve().as_uri()})" if report.exists() else ""]
        lines += [f"- heatmap: [{p.name}]({p.resolve().as_uri()})" for p in images]
        create_markdown_artifact("\n".join(lines), key="deeptalk-gate", description="gate verdict")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@flow(name="deeptalk-pipeline", log_prints=True)
def deeptalk_pipeline(
    profile: str = "tiny",
    params: str = "params.yaml",
    stages: list[str] | None = None,
    split_rule: str | None = None,
    baselines: list[str] | None = None,
    gates: dict | None = None,
    gpu_pool: bool = False,
) -> dict:
    """Data → codec → text pretrain → S1 → profile → S2a → S2b → S3 (+ baselines) → evaluate → gate → package.

    ``stages`` limits the run to a subset of step names (default: all but the baselines); ``split_rule`` (adaptive,
    fixed:N, random:N), ``baselines`` and ``gates`` override params.yaml for this run.
    """
    logger = get_run_logger()
    overrides: dict = {}
    if split_rule:
        overrides.setdefault("training", {})["split_rule"] = split_rule
    if gates:
        overrides["gates"] = gates
    cfg = load_config(params, profile=profile, overrides=overrides)
    wanted = set(stages) if stages is not None else set(MAIN_CHAIN) | {"evaluate", "package"}
    unknown = wanted - set(STEP_NAMES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {STEP_NAMES}")
    chain = [name for name in MAIN_CHAIN if name in wanted]
    chain += [f"train_{b}" for b in (baselines or ()) if f"train_{b}" not in chain]
    summaries = {}
    for name in chain:
        summaries[name] = _submit(get_step(name), cfg, params, overrides, gpu_pool)
    if "evaluate" in wanted:
        try:
            summaries["evaluate"] = _submit(get_step("evaluate"), cfg, params, overrides, gpu_pool=False)
        finally:
            _publish_artifacts(cfg)
    if "package" in wanted:
        summaries["package"] = _submit(get_step("package"), cfg, params, overrides, gpu_pool=False)
    logger.info("pipeline done: %s", ", ".join(summaries))
    return summaries


def run_pipeline_and_serve(profile: str | None = None, params: str = "params.yaml") -> int:
    """``make run``: the whole flow, then the packaged model served over HTTP and its answers judged
    (exit 1 when a call or a gate of ``deeptalk.flows.smoke`` fails; the printed lines name metric, value and
    threshold)."""
    from deeptalk.flows.smoke import serve_and_check

    cfg = load_config(params, profile=profile)
    summaries = deeptalk_pipeline(profile=cfg.profile, params=params)
    result = serve_and_check(cfg)
    print(json.dumps({"pipeline": summaries, "service": result}, indent=2, default=str))
    print("\n".join(["held-out spoken questions → served answers:", *result["summary"]]))
    return 0 if result["ok"] else 1


__all__ = ["deeptalk_pipeline", "deeptalk_step", "run_pipeline_and_serve", "STEP_NAMES"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the DeepTalk pipeline flow (Prefect)")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--stages", default=None, help="comma-separated step names (default: all)")
    parser.add_argument("--baselines", default=None, help="comma-separated: plain,fixed,moextend,strict")
    parser.add_argument("--split-rule", default=None)
    parser.add_argument("--gpu-pool", action="store_true", help="send training steps to the gpu work pool")
    args = parser.parse_args(argv)
    split = (lambda text: text.split(",") if text else None)
    summaries = deeptalk_pipeline(
        profile=args.profile or load_config(args.params).profile, params=args.params, stages=split(args.stages),
        baselines=split(args.baselines), split_rule=args.split_rule, gpu_pool=args.gpu_pool,
    )
    print(json.dumps(summaries, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
