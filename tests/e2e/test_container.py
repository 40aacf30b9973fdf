"""The service image as users deploy it: built by ``containers/build.sh`` (``make container``) from a packaged tiny
model, run on 127.0.0.1 with its settings in the environment, asked typed and spoken questions over HTTP.

Run by ``make test-container`` (CI: ``.ci/run``), not by ``make test`` (marker ``container``, deselected there):
building the image takes minutes. Skips only where no container tool exists and none can be installed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from deeptalk.inference.engine import META_FILE
from deeptalk.inference.events import decode_pcm
from deeptalk.serving.local_server import free_port, store_package_in
from tests.inference.conftest import QUESTIONS, SERVICE, build_package, espeak
from tests.serving.bad_inputs import wrong_statuses

BUILD_TIMEOUT_S = 1800  # ~6 min on 2 quiet cores; the build is CPU-bound (bytecode) and shares them with others
READY_TIMEOUT_S = 600  # load + warm-up: seconds on quiet cores, minutes when other jobs hold them
TIMEOUT_S = BUILD_TIMEOUT_S + READY_TIMEOUT_S + 300
pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(TIMEOUT_S)]
REPO = Path(__file__).resolve().parents[2]
KEY = "container-key"
HEADERS = {"authorization": f"Bearer {KEY}"}
MAX_CONCURRENCY = 3  # set through $DEEPTALK_SERVICE, read back from /info
# the data, training and orchestration stacks: not installed in the image (bentofile.yaml)
NOT_SERVED = ["pandas", "pyarrow", "great_expectations", "prefect", "dvc", "deepspeed", "sklearn", "faster_whisper"]
MAX_IMAGE_BYTES = 1.9e9  # 1.61 GB measured; BentoML's default apt step (+640 MB) or a CUDA torch would exceed it


def container_tool() -> str:
    """The tool containers/build.sh will use, or a skip where there is none and apt cannot install podman."""
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("apt-get") and (os.geteuid() == 0 or shutil.which("sudo")):
        return "podman"  # containers/build.sh installs it
    pytest.skip("no podman, no running Docker daemon, and apt-get cannot install podman here")


@dataclass(frozen=True)
class Tool:
    name: str
    env: dict

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([self.name, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result


@dataclass(frozen=True)
class Served:
    url: str
    container: str
    image: str
    tool: Tool


@pytest.fixture(scope="module")
def tool() -> Tool:
    name = container_tool()
    env = dict(os.environ)
    if name == "podman":  # the same runtime settings as containers/build.sh
        env.setdefault("CONTAINERS_CONF", str(REPO / "containers" / "containers.conf"))
    return Tool(name, env)


@pytest.fixture(scope="module")
def image(tool, tmp_path_factory):
    root = tmp_path_factory.mktemp("container")
    package = build_package(root / "package")
    (package / META_FILE).write_text(json.dumps({"profile": "tiny", "service": SERVICE.to_dict()}))
    home = root / "bentoml"
    model_tag = store_package_in(package, home)
    name = f"deeptalk-test:{uuid.uuid4().hex[:12]}"
    env = {**tool.env, "BENTOML_HOME": str(home), "IMAGE": name, "CONTAINER_BACKEND": tool.name,
           "PY": sys.executable}
    build = subprocess.Popen([str(REPO / "containers" / "build.sh"), model_tag], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = build.communicate(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)  # build.sh, bentoml and podman with it
        out, err = build.communicate()
        pytest.fail(f"containers/build.sh took over {BUILD_TIMEOUT_S} s:\n{err[-4000:]}")
    assert build.returncode == 0, f"containers/build.sh failed:\n{err[-6000:]}"
    assert out.strip().splitlines()[-1] == name
    try:
        yield name
    finally:
        tool("rmi", "-f", name, check=False)


@pytest.fixture(scope="module")
def served(tool, image):
    port = free_port()
    container = tool(
        "run", "-d", "-p", f"127.0.0.1:{port}:3000",
        "-e", f"DEEPTALK_API_KEY={KEY}",
        "-e", f'DEEPTALK_SERVICE={{"max_concurrency": {MAX_CONCURRENCY}}}',
        "-e", "DEEPTALK_DEVICE=cpu",
        image,
    ).stdout.strip()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            state = tool("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            if state != "running":
                pytest.fail(f"the container stopped ({state}): {logs(tool, container)}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"not ready in {READY_TIMEOUT_S} s: {logs(tool, container)}")
            time.sleep(1)
        yield Served(url, container, image, tool)
    finally:
        tool("rm", "-f", container, check=False)


def logs(tool: Tool, container: str) -> str:
    out = tool("logs", container, check=False)
    return (out.stdout + out.stderr)[-4000:]


def events(resp: httpx.Response) -> list[dict]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in resp.text.splitlines() if line]


def pcm_of(evs: list[dict]) -> np.ndarray:
    chunks = [decode_pcm(base64.b64decode(e["audio"]), e["format"]) for e in evs if e["type"] == "audio.delta"]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def test_runs_as_a_non_root_user_with_the_cpu_torch(served):
    assert served.tool("exec", served.container, "id", "-u").stdout.strip() != "0"
    probe = "import torch; print(torch.version.cuda, torch.__version__)"
    assert served.tool("exec", served.container, "python", "-c", probe).stdout.split() == ["None", "2.13.0+cpu"]
    size = int(served.tool("image", "inspect", "--format", "{{.Size}}", served.image).stdout.strip())
    assert size < MAX_IMAGE_BYTES, f"image is {size / 1e9:.2f} GB"
    # the service answers (the tests below) without the data, training and orchestration stacks
    present = f"import importlib.util as u; print([m for m in {NOT_SERVED!r} if u.find_spec(m)])"
    assert served.tool("exec", served.container, "python", "-c", present).stdout.strip() == "[]"


def test_reports_health_and_readiness_for_an_orchestrator(served):
    assert httpx.get(f"{served.url}/livez").status_code == 200
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    assert "/readyz" in served.tool("image", "inspect", served.image).stdout  # its HEALTHCHECK (Docker format)
    if served.tool.name == "podman":  # runs the image's own HEALTHCHECK command inside the container
        assert served.tool("healthcheck", "run", served.container, check=False).returncode == 0


def test_reads_its_settings_from_the_environment(served):
    assert httpx.post(f"{served.url}/chat", json={"text": QUESTIONS[0]}, timeout=60).status_code == 401  # API key
    info = httpx.get(f"{served.url}/info", headers=HEADERS).json()
    assert info["limits"]["max_concurrency"] == MAX_CONCURRENCY  # DEEPTALK_SERVICE


def test_answers_typed_and_spoken_questions_and_speaks(served, tmp_path):
    typed = events(httpx.post(f"{served.url}/chat", json={"text": QUESTIONS[0], "speak": False}, headers=HEADERS,
                              timeout=120))
    assert typed[-1]["type"] == "done" and [e["type"] for e in typed].count("done") == 1
    assert "".join(e["text"] for e in typed if e["type"] == "text.delta") == typed[-1]["text"]
    assert not any(e["type"] == "audio.delta" for e in typed)

    question = espeak(QUESTIONS[0], tmp_path / "question.wav").read_bytes()
    spoken = events(httpx.post(f"{served.url}/chat", files={"audio": ("q.wav", question, "audio/wav")},
                               headers=HEADERS, timeout=120))
    assert spoken[-1]["type"] == "done"
    pcm = pcm_of(spoken)
    assert pcm.size and np.isfinite(pcm).all()
    rate = httpx.get(f"{served.url}/info", headers=HEADERS).json()["output_sample_rate"]
    assert abs(pcm.size / rate - spoken[-1]["timings"]["audio_seconds"]) < 1e-3

    said = events(httpx.post(f"{served.url}/tts", json={"text": "two plus two is four"}, headers=HEADERS,
                             timeout=120))
    assert said[-1]["type"] == "done" and pcm_of(said).size > 0


def test_bad_input_gets_its_4xx_and_the_service_stays_up(served):
    assert wrong_statuses(served.url, KEY) == []
    r = httpx.post(f"{served.url}/chat", json={"text": QUESTIONS[0], "speak": False}, headers=HEADERS, timeout=60)
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1])["type"] == "done"
