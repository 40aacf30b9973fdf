"""``make run``'s service check end to end against a stand-in HTTP service (no server is started): its ``ok``
is false for a service that says the same sentence to every question and true for one that answers."""

import base64
import json
from contextlib import contextmanager
from urllib.parse import parse_qs

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import flows.smoke as smoke
from deeptalk.config import load_config

ANSWERS = ["paris", "four", "london", "rome", "berlin", "madrid", "tokyo", "cairo", "lima", "oslo", "vienna",
           "dublin"]
SENTENCE = "the chemical symbol for chromium is cr."


def _question(i: int) -> str:
    return f"what is answer number {i}"


@pytest.fixture
def cfg(tmp_path):
    """A corpus with 12 held-out spoken questions in a held-out voice (and one in a training voice)."""
    raw = tmp_path / "data" / "raw"
    (raw / "audio").mkdir(parents=True)
    utts, samples = [], []
    for i, answer in enumerate([*ANSWERS, "quito"]):
        sf.write(raw / "audio" / f"q{i}.wav", np.full(1600, 0.1, np.float32), 16000)
        speaker = "flite:rms" if i < len(ANSWERS) else "espeak:en-us"  # the last is a training voice
        utts.append({"id": f"q{i}", "audio_path": f"audio/q{i}.wav", "speaker": speaker})
        turns = [{"role": "user", "text": _question(i), "audio_id": f"q{i}", "speak": True},
                 {"role": "assistant", "text": answer, "audio_id": None, "speak": False}]
        samples.append({"id": f"rqa-heldout-{i:05d}", "task": "rqa", "split": "heldout", "fact_id": "",
                        "turns": json.dumps(turns)})
    pd.DataFrame(utts).to_parquet(raw / "utterances.parquet")
    pd.DataFrame(samples).to_parquet(raw / "samples.parquet")
    return load_config(tmp_path / "params.yaml", profile="tiny", root=tmp_path,
                       overrides={"evaluation": {"distinct_questions": 16}})


def _ndjson(text: str, audio: bool = False) -> httpx.Response:
    events = [{"type": "text.delta", "text": text}]
    if audio:
        pcm = base64.b64encode(np.zeros(2400, np.int16).tobytes()).decode()
        events.append({"type": "audio.delta", "audio": pcm, "sample_rate": 24000})
    events.append({"type": "done", "timings": {"total_ms": 1.0}})
    return httpx.Response(200, text="\n".join(json.dumps(e) for e in events) + "\n")


def _service(answer, transcribe):
    """A MockTransport handler: ``answer(i)`` to question i spoken or typed, ``transcribe(i)`` for /asr."""

    def which_wav(body: bytes) -> int:
        return int(body.split(b'filename="q', 1)[1].split(b".wav", 1)[0])

    def handle(request: httpx.Request) -> httpx.Response:
        body = request.read()
        route = request.url.path
        if route == "/readyz":
            return httpx.Response(200)
        if route == "/tts":
            return _ndjson("spoken", audio=True)
        if route == "/asr":
            text = transcribe(which_wav(body))
            return httpx.Response(200, json={"text": text, "reason": "eot", "timings": {}})
        if b'filename="' in body:  # /chat with a wav
            return _ndjson(answer(which_wav(body)), audio=True)
        form = parse_qs(body.decode())
        assert form["speak"] == ["false"]
        return _ndjson(answer(int(form["text"][0].rsplit(" ", 1)[1])))

    return handle


def _check(cfg, monkeypatch, handler) -> dict:
    @contextmanager
    def server(startup_timeout_s):
        yield "http://service"

    real_client = httpx.Client
    monkeypatch.setattr(smoke, "LocalServer", server)
    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(smoke.httpx, "Client", lambda timeout: real_client(transport=transport))
    return smoke.serve_and_check(cfg)


def test_a_service_that_answers_is_ok(cfg, monkeypatch):
    result = _check(cfg, monkeypatch, _service(lambda i: f"It is {ANSWERS[i]}.", _question))
    assert result["ok"] is True and result["questions"] == len(ANSWERS) and result["failed_calls"] == []
    quality = result["quality"]
    assert quality["metrics"]["spoken_qa"]["distinct_answers"] == len(ANSWERS)
    # the question in a training voice is left out
    assert quality["metrics"]["spoken_qa"]["n_questions"] == len(ANSWERS)
    assert quality["metrics"]["asr"]["wer"] == 0.0
    assert result["summary"][0] == "  'what is answer number 0' → 'It is paris.' (correct)"
    assert len(quality["examples"]) == 3 and result["tts"]["audio_seconds"] == 0.1


def test_a_collapsed_service_is_not_ok(cfg, monkeypatch):
    result = _check(cfg, monkeypatch, _service(lambda i: SENTENCE, lambda i: SENTENCE))
    assert result["ok"] is False and result["failed_calls"] == []  # every call worked: the model did not
    failed = {f["metric"]: f["value"] for f in result["quality"]["gates"]["failures"]}
    assert failed["spoken_qa.distinct_answers"] == 1  # the tiny bars: a collapsed service fails them
    assert failed["asr.wer"] > cfg.evaluation.gates.max_asr_wer
    assert ("served model check FAILED: spoken_qa.distinct_answers = 1 violates min_distinct_answers: "
            "must be >= 12") in result["summary"]


def test_too_few_heldout_questions_is_an_error(cfg, monkeypatch):
    samples = pd.read_parquet(cfg.paths.raw / "samples.parquet")
    samples.iloc[:4].to_parquet(cfg.paths.raw / "samples.parquet")
    with pytest.raises(RuntimeError, match="needs at least 10"):
        smoke.heldout_questions(cfg)
