"""Deployments for the Prefect UI, and ``make ui``: server + worker + deployments on this machine.

Two work pools of type ``process``:
- ``cpu``: the pipeline flow (and light steps) — a worker on this machine serves it;
- ``gpu``: single heavy steps (``deeptalk-step``), sent there when the pipeline runs with ``gpu_pool=true``.

The deployments name their flows by module (``flows.pipeline.deeptalk_pipeline``): a worker imports
them from its own installed ``deeptalk`` and runs them in its own project directory (``$DEEPTALK_PROJECT_DIR``),
nothing of the server's working directory. The deployments are declared once, in ``prefect.yaml``: ``make ui``
registers them from there, as ``prefect deploy --all`` does. Runs do not collide: the pipeline deployment has a
concurrency limit
of 1 (a second UI run waits in the queue until the first ends), because every run of a project writes the same
``models/``, ``reports/`` and state of record; separate workspaces would need their own data and models, which
defeats resuming. Runs started outside the deployment (``make run``) take the project's run lock instead
(``flows.pipeline.project_lock``) and fail at once, naming the holder. Step inputs and outputs travel
through the project's DVC remote
(``flows/exchange.py``). A GPU machine joins by cloning this repo, ``make setup``, configuring the same
DVC remote (``dvc remote add -d …``, credentials in its environment) and

    DEEPTALK_PROJECT_DIR=$PWD PREFECT_API_URL=http://<server>:4200/api .venv/bin/prefect worker start --pool gpu
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deeptalk.environment import apply_env_defaults

# the project directory this server and its cpu worker serve (not where the package is installed)
REPO = Path(os.environ.get("DEEPTALK_PROJECT_DIR") or Path.cwd()).resolve()
POOLS = {"cpu": "process", "gpu": "process"}

log = logging.getLogger(__name__)


def ensure_pools() -> None:
    for pool, kind in POOLS.items():
        result = subprocess.run(
            [sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", kind, "--overwrite"],
            capture_output=True, text=True, cwd=REPO,
        )
        if result.returncode != 0:
            raise RuntimeError(f"could not create work pool {pool}: {result.stderr.strip()}")


PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"  # the deployments, also for `prefect deploy --all`


def deployments(path: Path = PREFECT_YAML) -> list[dict]:
    """The deployments declared in ``prefect.yaml`` (name, entrypoint as a module path, parameters, work pool,
    concurrency limit), checked against Prefect's own schema for the file."""
    import yaml
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(yaml.safe_load(path.read_text()))
    return [d.model_dump(exclude_none=True) for d in model.deployments]


def _flow(entrypoint: str):
    import importlib

    module, _, name = entrypoint.rpartition(".")
    return getattr(importlib.import_module(module), name)


def deploy_all(profile: str = "tiny") -> list[str]:
    """Register the deployments of ``prefect.yaml`` by module path (what ``prefect deploy --all`` registers), the
    pipeline's at ``profile``; returns their ids."""
    from prefect.deployments.runner import EntrypointType

    ensure_pools()
    ids = []
    for spec in deployments():
        parameters = dict(spec.get("parameters") or {})
        if spec["entrypoint"] == "flows.pipeline.deeptalk_pipeline":
            parameters["profile"] = profile
        deployment = _flow(spec["entrypoint"]).to_deployment(
            name=spec["name"], description=spec.get("description"), parameters=parameters,
            entrypoint_type=EntrypointType.MODULE_PATH, concurrency_limit=spec.get("concurrency_limit"))
        ids.append(str(deployment.apply(work_pool_name=spec["work_pool"]["name"])))
    return ids


def wait_healthy(api_url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start prefect server + cpu worker and register deployments")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--profile", default="tiny")
    args = parser.parse_args(argv)
    apply_env_defaults(REPO)
    logging.basicConfig(level="INFO")
    api_url = f"http://127.0.0.1:{args.port}/api"
    env = {**os.environ, "PREFECT_API_URL": api_url, "DEEPTALK_PROJECT_DIR": str(REPO)}
    os.environ["PREFECT_API_URL"] = api_url
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(args.port)], cwd=REPO, env=env)
    worker = None
    try:
        wait_healthy(api_url)
        deploy_all(args.profile)
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu"], cwd=REPO,
                                  env=env)
        log.info("Prefect UI: http://127.0.0.1:%d — run 'deeptalk-pipeline/deeptalk' with parameters", args.port)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (worker, server):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
