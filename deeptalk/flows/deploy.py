"""Deployments for the Prefect UI, and ``make ui``: server + worker + deployments on this machine.

Two work pools of type ``process``:
- ``cpu``: the pipeline flow (and light steps) — a worker on this machine serves it;
- ``gpu``: single heavy steps (``deeptalk-step``), sent there when the pipeline runs with ``gpu_pool=true``.
  A GPU machine joins by cloning this repo, running ``make setup`` and
  ``PREFECT_API_URL=http://<server>:4200/api .venv/bin/prefect worker start --pool gpu``.
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

REPO = Path(__file__).resolve().parents[2]
PIPELINE_ENTRY = "deeptalk/flows/pipeline.py:deeptalk_pipeline"
STEP_ENTRY = "deeptalk/flows/pipeline.py:deeptalk_step"
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


def deploy_all(profile: str = "tiny") -> list[str]:
    """Register the pipeline (cpu pool) and the single-step flow (gpu pool); returns deployment ids."""
    from prefect import flow

    ensure_pools()
    pipeline = flow.from_source(source=str(REPO), entrypoint=PIPELINE_ENTRY)
    step = flow.from_source(source=str(REPO), entrypoint=STEP_ENTRY)
    ids = [
        pipeline.deploy(name="deeptalk", work_pool_name="cpu", parameters={"profile": profile},
                        build=False, push=False, print_next_steps=False),
        step.deploy(name="gpu", work_pool_name="gpu", build=False, push=False, print_next_steps=False),
    ]
    return [str(i) for i in ids]


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
    logging.basicConfig(level="INFO")
    api_url = f"http://127.0.0.1:{args.port}/api"
    env = {**os.environ, "PREFECT_API_URL": api_url}
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
