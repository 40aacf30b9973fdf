"""Workers on other machines, simulated: a Prefect server, a ``cpu`` worker in one project directory and a
``gpu`` worker in another, sharing nothing but a DVC remote on a local S3 (moto). The pipeline deployment runs
on the cpu worker and sends a step to the gpu pool; the step's outputs come back through S3. Without a gpu
worker the run fails after its timeout, naming the pool."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from deeptalk.serving.local_server import free_port
from tests._moto import CREDENTIALS, moto_s3
from tests.e2e._project import FAST_PARAMS, VENV_BIN, clone_project

PY = sys.executable
DVC = str(VENV_BIN / "dvc")
STEP = "prepare_encoder"  # a real step, quick on a CPU, whose output (models/encoder) must travel back


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@contextmanager
def _process(cmd: list[str], cwd: Path, env: dict, log: Path):
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def _env(project: Path, api: str, s3: str) -> dict:
    return {**os.environ, **CREDENTIALS, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "PREFECT_API_URL": api,
            "PREFECT_HOME": str(project / ".prefect"), "DEEPTALK_PROJECT_DIR": str(project),
            "PYTHONPATH": str(project), "DEEPTALK_THREADS": "1", "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}


def _dvc_project(path: Path, s3: str) -> Path:
    project = clone_project(path, FAST_PARAMS)
    for args in (["init", "--no-scm", "-f", "-q"], ["remote", "add", "-d", "store", "s3://exchange/store"],
                 ["remote", "modify", "store", "endpointurl", s3]):
        subprocess.run([DVC, *args], cwd=project, check=True, capture_output=True)
    return project


def _run_pipeline(cwd: Path, env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    code = (
        "from prefect.deployments import run_deployment\n"
        "run = run_deployment('deeptalk-pipeline/deeptalk', timeout=600, parameters={"
        f"'stages': ['{STEP}'], 'gpu_pool': True, 'gpu_steps': ['{STEP}'], 'gpu_pool_timeout_s': {timeout_s}}})\n"
        "print('STATE', run.state.type.value, run.state.message)\n"
    )
    return subprocess.run([PY, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _flow_run_logs(env: dict, cwd: Path) -> str:
    code = (
        "from prefect import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    for r in c.read_flow_runs():\n"
        "        print('RUN', r.name, r.state.type.value)\n"
        "    for l in c.read_logs():\n"
        "        print('LOG', l.message)\n"
        "    for a in c.read_artifacts():\n"
        "        print('ARTIFACT', a.key, a.type, a.data)\n"
    )
    return subprocess.run([PY, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.slow
def test_a_step_runs_on_a_worker_in_another_directory_and_its_outputs_return_through_s3(tmp_path):
    with moto_s3() as s3:
        import boto3

        boto3.client("s3", endpoint_url=s3, **{k.lower(): v for k, v in CREDENTIALS.items()
                                                if k != "AWS_DEFAULT_REGION"},
                     region_name="us-east-1").create_bucket(Bucket="exchange")
        server_dir, gpu_dir = _dvc_project(tmp_path / "server", s3), _dvc_project(tmp_path / "gpu-box", s3)
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        env_a, env_b = _env(server_dir, api, s3), _env(gpu_dir, api, s3)
        server_cmd = [PY, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        with _process(server_cmd, server_dir, env_a, tmp_path / "server.log"):
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(1)
            subprocess.run([PY, "-c", "from flows.deploy import deploy_all; deploy_all()"], cwd=server_dir,
                           env=env_a, check=True, capture_output=True, timeout=300)
            worker = [PY, "-m", "prefect", "worker", "start", "--pool"]
            with _process([*worker, "cpu"], server_dir, env_a, tmp_path / "cpu-worker.log"):
                # no gpu worker yet: the step waits its timeout, then the run fails naming the pool
                alone = _run_pipeline(server_dir, env_a, timeout_s=15)
                assert "STATE FAILED" in alone.stdout, alone.stdout + alone.stderr
                logs = _flow_run_logs(env_a, server_dir)
                assert "no worker of work pool 'gpu' picked up step prepare_encoder" in logs, logs[-3000:]
                assert not (server_dir / "models" / "encoder").exists()

                with _process([*worker, "gpu"], gpu_dir, env_b, tmp_path / "gpu-worker.log"):
                    done = _run_pipeline(server_dir, env_a, timeout_s=300)
                    assert "STATE COMPLETED" in done.stdout, (
                        done.stdout + done.stderr + (tmp_path / "gpu-worker.log").read_text()[-3000:])
                runs = _flow_run_logs(env_a, server_dir)
        # the step ran in the gpu worker's directory, and its outputs came back through S3
        assert (gpu_dir / "models" / "encoder").is_dir()
        assert _digests(server_dir / "models" / "encoder") == _digests(gpu_dir / "models" / "encoder")
        assert f"RUN {STEP} COMPLETED" in runs and "RUN deeptalk-tiny COMPLETED" in runs  # runs named by step
        assert f"RUN {STEP} CANCELLED" in runs  # the one no worker took was withdrawn
        assert "exchange:" in runs  # the project's own log lines reached the UI
        assert f"ARTIFACT progress-{STEP.replace('_', '-')} progress 100" in runs  # the step's progress, on the gpu box
