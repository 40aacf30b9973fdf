"""The browser demo in headless Chromium: fake microphone (an espeak wav) → /realtime → audio played back.

Chromium is driven over the DevTools protocol (plain WebSocket, no extra packages). The page's state
(``window.demo``) says what it received and played; a screenshot goes to ``artifacts/e2e/``.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from deeptalk.inference.engine import META_FILE
from deeptalk.serving.local_server import PROJECT_ROOT, LocalServer, free_port, store_package_in
from tests.inference.conftest import SERVICE, build_package, espeak

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "artifacts" / "e2e"
KEY = "browser-key"


class DevTools:
    """Minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=50_000_000)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    package = build_package(root / "package")
    (package / META_FILE).write_text(json.dumps({"profile": "tiny", "service": SERVICE.to_dict()}))
    home = root / "bentoml"
    store_package_in(package, home)
    with LocalServer(bentoml_home=home, env={"DEEPTALK_API_KEY": KEY}, log_path=root / "serve.log") as url:
        yield url


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_demo_records_fake_microphone_and_plays_the_streamed_answer(server, tmp_path):
    wav = espeak("what is the capital of france", tmp_path / "mic.wav")
    port = free_port()
    cmd = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        f"--remote-debugging-port={port}",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=900,900",
        f"{server}/demo?auto=2&key={KEY}",
    ]
    browser = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        page = None
        for _ in range(60):
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                page = next((t for t in targets if t["type"] == "page" and "/demo" in t["url"]), None)
                if page:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert page is not None, "chromium did not open the demo page"
        tools = DevTools(page["webSocketDebuggerUrl"])
        state = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = json.loads(tools.evaluate("JSON.stringify(window.demo || {})") or "{}")
            if state.get("responses", 0) >= 1 and state.get("playedSeconds", 0) > 0:
                break
            time.sleep(0.5)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = tools.call("Page.captureScreenshot", format="png")
        (ARTIFACTS / "browser_demo.png").write_bytes(base64.b64decode(shot["data"]))
        (ARTIFACTS / "browser_demo_state.json").write_text(json.dumps(state, indent=2))
        tools.close()
    finally:
        subprocess.run(["kill", "--", f"-{browser.pid}"], check=False)
        browser.wait(10)
    assert state.get("errors") == [], state.get("errors")
    assert state["responses"] >= 1 and state["chunks"] >= 1 and state["samplesQueued"] > 0
    assert state["playedSeconds"] > 0, "the page must actually play the received audio"
    assert state["firstAudioMs"] is not None and state["firstAudioMs"] > 0
    assert state["serverFirstAudioMs"] is not None
    assert (ARTIFACTS / "browser_demo.png").stat().st_size > 1000
