"""End to end against the real `bentoml serve` process on 127.0.0.1 with a packaged tiny random model."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from httpx_ws import WebSocketUpgradeError, connect_ws

from deeptalk.inference.engine import META_FILE
from deeptalk.inference.events import decode_pcm
from deeptalk.serving.local_server import LocalServer, store_package_in
from tests.serving.bad_inputs import CASES, wav_bytes, wrong_statuses
from tests.inference.conftest import SERVICE, build_package

pytestmark = pytest.mark.slow
KEY = "e2e-key"
HEADERS = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    package = build_package(root / "package")
    (package / META_FILE).write_text(json.dumps({"profile": "tiny", "service": SERVICE.to_dict()}))
    home = root / "bentoml"
    store_package_in(package, home)
    with LocalServer(bentoml_home=home, env={"DEEPTALK_API_KEY": KEY}, log_path=root / "serve.log") as url:
        yield url


def ndjson_lines(resp: httpx.Response):
    """(arrival time, event) per NDJSON line as the server sends it."""
    for line in resp.iter_lines():
        if line:
            yield time.perf_counter(), json.loads(line)


def healthy(url: str) -> None:
    assert httpx.get(f"{url}/livez").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 200
    r = httpx.post(f"{url}/chat", json={"text": "hello", "speak": False}, headers=HEADERS, timeout=60)
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1])["type"] == "done"


def test_chat_streams_events_as_they_are_generated(server):
    start = time.perf_counter()
    with httpx.stream(
        "POST",
        f"{server}/chat",
        headers=HEADERS,
        timeout=60,
        files={"audio": ("q.wav", wav_bytes(1.0, 22050), "audio/wav")},
    ) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
        got = list(ndjson_lines(resp))
    kinds = [e["type"] for _, e in got]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and "audio.delta" in kinds
    first_audio = next(t for t, e in got if e["type"] == "audio.delta")
    assert first_audio < got[-1][0], "audio must arrive before the answer is complete"
    pcm = np.concatenate(
        [decode_pcm(base64.b64decode(e["audio"]), e["format"]) for _, e in got if e["type"] == "audio.delta"]
    )
    done = got[-1][1]
    assert abs(len(pcm) / 24000 - done["timings"]["audio_seconds"]) < 1e-3
    assert done["timings"]["first_audio_ms"] <= (first_audio - start) * 1000 + 50


def test_openapi_and_demo_are_served(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    assert {"/chat", "/asr", "/tts", "/voices", "/info"} <= set(spec["paths"])
    assert "415" in spec["paths"]["/chat"]["post"]["responses"]
    assert "/realtime" in httpx.get(f"{server}/static/app.js").text


def test_realtime_websocket_conversation(server):
    ws_url = server.replace("http", "ws") + f"/realtime?api_key={KEY}"
    pcm = (np.sin(np.arange(16000) / 8) * 8000).astype("<i2").tobytes()
    with httpx.Client() as client, connect_ws(ws_url, client) as ws:
        assert ws.receive_json()["type"] == "session.created"
        ws.send_json({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        ws.send_json({"type": "response.create"})
        events = []
        while not events or events[-1]["type"] not in ("response.done", "error"):
            events.append(ws.receive_json(timeout=60))
        kinds = [e["type"] for e in events]
        assert kinds[0] == "input_audio_buffer.committed" and kinds[-1] == "response.done"
        assert "response.audio.delta" in kinds
        ws.send_json({"type": "conversation.item.create", "item": {"role": "user", "text": "hello"}})
        ws.send_json({"type": "response.create", "response": {"modalities": ["text"]}})
        events = []
        while not events or events[-1]["type"] not in ("response.done", "error"):
            events.append(ws.receive_json(timeout=60))
        assert events[-1]["type"] == "response.done"
        assert not any(e["type"] == "response.audio.delta" for e in events)


def test_bad_input_suite_gets_documented_statuses_and_server_stays_healthy(server):
    assert len(CASES) >= 20
    assert wrong_statuses(server, KEY) == []
    with httpx.Client() as client:  # a bad WebSocket client: no key, then garbage
        with pytest.raises(WebSocketUpgradeError) as denied:
            with connect_ws(server.replace("http", "ws") + "/realtime", client):
                pass
        assert denied.value.response.status_code == 401
        with connect_ws(server.replace("http", "ws") + f"/realtime?api_key={KEY}", client) as ws:
            ws.receive_json()
            ws.send_text("garbage")
            assert ws.receive_json()["type"] == "error"
    healthy(server)


def test_concurrent_clients_never_mix_streams(server):
    """More clients than slots: every request streams its own complete answer or gets 503 + Retry-After."""
    barrier = threading.Barrier(6)

    def client(i: int):
        barrier.wait()
        with httpx.stream(
            "POST",
            f"{server}/chat",
            headers=HEADERS,
            timeout=120,
            json={"text": ["hello", "two plus two", "the capital of france"][i % 3]},
        ) as resp:
            if resp.status_code == 503:
                return 503, resp.headers.get("retry-after"), None
            events = [e for _, e in ndjson_lines(resp)]
            return resp.status_code, None, events

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(client, range(6)))
    ok = [r for r in results if r[0] == 200]
    assert all(r[0] in (200, 503) for r in results)
    assert all(r[1] == str(SERVICE.retry_after_s) for r in results if r[0] == 503)
    assert len(ok) >= SERVICE.max_concurrency
    for _, _, events in ok:
        assert [e["type"] for e in events].count("done") == 1 and events[-1]["type"] == "done"
        text = "".join(e["text"] for e in events if e["type"] == "text.delta")
        assert text.strip() == events[-1]["text"]
    healthy(server)
