"""The HTTP and WebSocket API in-process (Starlette TestClient) on the tiny random model."""

import base64
import json
import re

import numpy as np
import pytest
from starlette.testclient import TestClient

from deeptalk.inference.events import decode_pcm
from deeptalk.serving.app import create_app
from deeptalk.serving.capacity import EngineHolder
from tests.serving.bad_inputs import CASES, CORRUPT_WAV, wav_bytes, with_key

KEY = "s3cret"


@pytest.fixture
def holder(engine):
    return EngineHolder(engine)


@pytest.fixture
def client(holder, monkeypatch):
    monkeypatch.setenv("DEEPTALK_API_KEY", KEY)
    with TestClient(create_app(holder, static_dir="static")) as c:
        yield c


def auth(**kw):
    return {**kw, "headers": {**kw.get("headers", {}), "authorization": f"Bearer {KEY}"}}


def events(resp):
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in resp.text.splitlines() if line]


def test_chat_text_streams_ndjson_with_audio_and_done(client, engine):
    evs = events(client.post("/chat", **auth(json={"text": "what is the capital of france", "voice": "joe"})))
    assert evs[-1]["type"] == "done" and evs[-1]["timings"]["steps"] > 0
    audio = [e for e in evs if e["type"] == "audio.delta"]
    assert audio and {e["sample_rate"] for e in audio} == {engine.codec.sample_rate}
    pcm = np.concatenate([decode_pcm(base64.b64decode(e["audio"]), e["format"]) for e in audio])
    assert len(pcm) == sum(e["samples"] for e in audio)
    text = "".join(e["text"] for e in evs if e["type"] == "text.delta")
    assert text.strip() == evs[-1]["text"]


def test_chat_audio_upload_any_format_and_text_only_answer(client):
    evs = events(
        client.post(
            "/chat",
            **auth(
                files={"audio": ("q.flac", wav_bytes(1.0, 44100, 2, "FLAC"), "audio/flac")},
                data={"speak": "false"},
            ),
        )
    )
    assert not any(e["type"] == "audio.delta" for e in evs) and evs[-1]["type"] == "done"
    evs = events(client.post("/chat", **auth(content=wav_bytes(0.5), headers={"content-type": "audio/wav"})))
    assert evs[-1]["type"] == "done"


def test_asr_and_tts(client):
    r = client.post("/asr", **auth(files={"audio": ("q.wav", wav_bytes(1.0), "audio/wav")}))
    assert r.status_code == 200 and set(r.json()) == {"text", "reason", "timings"}
    evs = events(client.post("/tts", **auth(json={"text": "two plus two is four"})))
    assert any(e["type"] == "audio.delta" for e in evs)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_its_documented_status(client, case):
    r = client.request(case.method, case.path, **with_key(case, KEY))
    assert r.status_code == case.status, r.text
    if case.status != 405:
        message = r.json()["error"]["message"]
        assert message and not re.search(r"object at 0x|Traceback|<class ", message), message


def test_unknown_words_are_named(client):
    r = client.post("/chat", **auth(json={"text": "hello zebra, hello qwxz zebra"}))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_words"
    assert "'zebra', 'qwxz'" in r.json()["error"]["message"]
    r = client.post("/chat", **auth(files={"audio": ("q.wav", CORRUPT_WAV, "audio/wav")}))
    assert r.json()["error"]["message"] == (
        "the wav file could not be decoded: Error in WAV/W64/RF64 file. Short 'fmt ' chunk."
    )


def test_capacity_refusal_is_503_with_retry_after(client, holder, engine):
    holders = [holder.capacity.slot() for _ in range(engine.config.max_concurrency)]
    for h in holders:
        h.__enter__()
    try:
        r = client.post("/chat", **auth(json={"text": "hello"}))
        assert r.status_code == 503 and r.headers["retry-after"] == str(engine.config.retry_after_s)
    finally:
        for h in holders:
            h.__exit__(None, None, None)
    assert client.post("/chat", **auth(json={"text": "hello", "speak": False})).status_code == 200
    assert holder.capacity.active == 0


def test_info_voices_openapi_and_demo(client):
    assert client.get("/voices").json() == {"voices": ["joe", "slt"], "default": "joe"}
    spec = client.get("/openapi.json").json()
    assert {"/chat", "/asr", "/tts"} <= set(spec["paths"])
    bodies = {route: spec["paths"][route]["post"]["requestBody"]["content"] for route in ("/chat", "/tts", "/asr")}
    assert {"application/json", "multipart/form-data", "audio/wav"} <= set(bodies["/chat"])
    assert bodies["/chat"]["application/json"]["schema"]["required"] == ["text"]
    assert bodies["/chat"]["multipart/form-data"]["schema"]["properties"]["audio"]["format"] == "binary"
    assert bodies["/tts"]["application/json"]["schema"]["properties"]["voice"]["description"]
    assert "audio" in bodies["/asr"]["multipart/form-data"]["schema"]["required"]
    chat = spec["paths"]["/chat"]["post"]["responses"]
    assert "oneOf" in chat["200"]["content"]["application/x-ndjson"]["schema"]
    assert chat["422"]["content"]["application/json"]["schema"]["properties"]["error"]
    assert {"ErrorDetail", "DoneEvent", "Timings"} <= set(spec["components"]["schemas"])
    assert client.get("/demo").status_code == 200


def ws_events(ws, until="response.done"):
    out = []
    while True:
        msg = ws.receive_json()
        out.append(msg)
        if msg["type"] in (until, "error"):
            return out


def test_realtime_audio_turn_then_text_turn_then_cancel(client, user_wav):
    with client.websocket_connect(f"/realtime?api_key={KEY}") as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created" and created["session"]["voices"] == ["joe", "slt"]
        pcm = (np.clip(user_wav, -1, 1) * 32767).astype("<i2").tobytes()
        for i in range(0, len(pcm), 6400):
            ws.send_json(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + 6400]).decode()}
            )
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert ws.receive_json()["type"] == "input_audio_buffer.committed"
        ws.send_json({"type": "response.create"})
        evs = ws_events(ws)
        kinds = {e["type"] for e in evs}
        assert "response.created" in kinds and "response.audio.delta" in kinds
        assert evs[-1]["type"] == "response.done" and evs[-1]["response"]["reason"] in (
            "complete",
            "max_steps",
        )
        # second turn, text, then barge in
        ws.send_json(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            }
        )
        assert ws.receive_json()["type"] == "conversation.item.created"
        ws.send_json({"type": "response.create"})
        ws.send_json({"type": "response.cancel"})  # barge-in before any output: nothing is generated
        evs = ws_events(ws)
        assert [e["type"] for e in evs] == ["response.created", "response.done"]
        assert evs[-1]["response"]["reason"] == "interrupted"
        # the connection stays usable after errors
        ws.send_json({"type": "session.update", "session": {"voice": "nobody"}})
        assert ws.receive_json()["error"]["code"] == "unknown_voice"
        ws.send_json({"type": "conversation.item.create", "item": {"role": "user", "text": "hello zebra"}})
        assert ws.receive_json()["error"]["code"] == "unknown_words"
        ws.send_json({"type": "response.create"})
        assert ws.receive_json()["error"]["code"] == "no_input"
        ws.send_text("{not json")
        assert ws.receive_json()["error"]["code"] == "bad_request"
        ws.send_json({"type": "session.update", "session": {"voice": "slt", "speak": False}})
        assert ws.receive_json()["session"] == {"voice": "slt", "speak": False, "input_sample_rate": 16000}
        ws.send_bytes(pcm[:16000])
        ws.send_json({"type": "response.create"})
        evs = ws_events(ws)
        assert evs[-1]["type"] == "response.done" and not any(
            e["type"] == "response.audio.delta" for e in evs
        )


def test_realtime_rejects_a_missing_key(client):
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as err:
        with client.websocket_connect("/realtime"):
            pass
    assert err.value.status_code == 401


# ---- the batched service: one scheduler decodes every answer ------------------------------------------------------
@pytest.fixture
def batched_holder(engine, request):
    from dataclasses import replace

    from deeptalk.serving.metrics import service_metrics

    max_steps = getattr(request, "param", engine.config.max_steps)
    eng = replace(engine, config=replace(engine.config, max_steps=max_steps), scheduler=None)
    eng.start_scheduler(observer=service_metrics())
    yield EngineHolder(eng, metrics=service_metrics())
    eng.scheduler.close()


@pytest.fixture
def batched_client(batched_holder, monkeypatch):
    monkeypatch.setenv("DEEPTALK_API_KEY", KEY)
    with TestClient(create_app(batched_holder)) as c:
        yield c


def _sample(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


def test_batched_service_answers_as_the_unbatched_one_and_reports_metrics(client, batched_client):
    body = auth(json={"text": "what is the capital of france", "voice": "joe"})
    steps_before, first_audio_before = _sample("deeptalk_batch_size_count"), _sample("deeptalk_first_audio_seconds_count")
    alone, batched = events(client.post("/chat", **body)), events(batched_client.post("/chat", **body))
    strip = lambda evs: [{k: v for k, v in e.items() if k != "timings"} for e in evs]  # noqa: E731
    assert strip(alone) == strip(batched)
    assert batched_client.get("/info").json()["batching"] is True
    assert client.get("/info").json()["batching"] is False
    assert _sample("deeptalk_batch_size_count") - steps_before == batched[-1]["timings"]["steps"]
    assert _sample("deeptalk_first_audio_seconds_count") == first_audio_before + 1
    assert _sample("deeptalk_inter_chunk_seconds_count") > 0


@pytest.mark.parametrize("batched_holder", [2000], indirect=True)  # long answers: the cancel lands mid-answer
def test_realtime_cancel_frees_the_batch_row_at_the_next_step(batched_client, batched_holder):
    import time

    scheduler, capacity = batched_holder.engine.scheduler, batched_holder.capacity
    with batched_client.websocket_connect(f"/v1/realtime?api_key={KEY}") as ws:  # the OpenAI SDK's path
        assert ws.receive_json()["type"] == "session.created"
        ws.send_json({"type": "conversation.item.create", "item": {"role": "user", "text": "hello"}})
        assert ws.receive_json()["type"] == "conversation.item.created"
        ws.send_json({"type": "response.create"})
        assert ws.receive_json()["type"] == "response.created"
        while ws.receive_json()["type"] not in ("response.audio.delta", "response.text.delta"):
            pass
        assert scheduler.active == 1
        ws.send_json({"type": "response.cancel"})
        evs = ws_events(ws)
        assert evs[-1]["type"] == "response.done" and evs[-1]["response"]["reason"] == "interrupted"
        assert evs[-1]["response"]["timings"]["steps"] < 2000
        assert scheduler.active == 0  # the row left the batch before done was sent
        for _ in range(100):
            if capacity.active == 0:
                break
            time.sleep(0.01)
        assert capacity.active == 0
        # the connection and the scheduler serve the next turn
        ws.send_json({"type": "session.update", "session": {"speak": False}})
        assert ws.receive_json()["type"] == "session.updated"
        ws.send_json({"type": "conversation.item.create", "item": {"role": "user", "text": "hello"}})
        assert ws.receive_json()["type"] == "conversation.item.created"
        ws.send_json({"type": "response.create"})
        assert ws_events(ws)[-1]["type"] == "response.done"
