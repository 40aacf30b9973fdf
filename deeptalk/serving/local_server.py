"""Run the real ``bentoml serve`` process on 127.0.0.1 for end-to-end tests, benchmarks and the smoke check.

``LocalServer`` starts ``bentoml serve service:DeepTalk`` in its own process group (so every worker it forks
is stopped with it), waits for ``/readyz`` and stops it on exit. ``store_package`` puts a packaged model
directory into a BentoML model store (``$BENTOML_HOME``), for tests that skip the pipeline.

    python -m deeptalk.serving.local_server store <package_dir>   # with BENTOML_HOME set
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deeptalk.inference.engine import CODEC_DIR, META_FILE, MODEL_DIR, TOKENIZER_DIR

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_package(package_dir: str | Path, name: str = "deeptalk") -> str:
    """Copy a packaged model directory into the current BentoML model store; returns the new tag."""
    import bentoml

    src = Path(package_dir)
    with bentoml.models.create(name, labels={"source": "local"}) as model:
        for sub in (MODEL_DIR, CODEC_DIR, TOKENIZER_DIR):
            shutil.copytree(src / sub, Path(model.path) / sub)
        if (src / META_FILE).exists():
            shutil.copy(src / META_FILE, Path(model.path) / META_FILE)
    return str(model.tag)


def store_package_in(package_dir: str | Path, bentoml_home: str | Path) -> str:
    """``store_package`` into another BentoML home (a subprocess: BentoML caches its home per process)."""
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home)}
    out = subprocess.run(
        [sys.executable, "-m", "deeptalk.serving.local_server", "store", str(package_dir)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


class LocalServer:
    """``with LocalServer(env={...}) as url:`` a served DeepTalk at ``url`` (``http://127.0.0.1:PORT``)."""

    def __init__(
        self,
        *,
        bentoml_home: str | Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        startup_timeout_s: float = 180.0,
        log_path: str | Path | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **os.environ, **(env or {})}
        if bentoml_home is not None:
            self.env["BENTOML_HOME"] = str(bentoml_home)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> str:
        cmd = [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "service:DeepTalk",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"bentoml serve exited with {self.proc.returncode}; log: {self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"server not ready within {self.startup_timeout_s} s; log: {self.log_tail()}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 3000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text()[-n:]
        return "(no log)"


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "store":
        sys.exit("usage: python -m deeptalk.serving.local_server store <package_dir>")
    print(store_package(sys.argv[2]))
