"""The last leg of ``make run``: serve the packaged model with ``bentoml serve`` and talk to it over HTTP.

A spoken held-out question (a held-out speaker's wav from the corpus) goes to ``POST /chat`` (a streamed answer
with its timings; how much of it is speech is the model's business and the gates' — a tiny model may close its
audio early), a typed question asks for text only, ``POST /tts`` must stream audio and ``POST /asr`` must
transcribe. Returns a summary with timings.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import httpx
import pandas as pd

from deeptalk.config import ProjectConfig
from deeptalk.inference.local_server import LocalServer

log = logging.getLogger(__name__)


def _heldout_question_wav(cfg: ProjectConfig) -> tuple[Path, str]:
    utterances = pd.read_parquet(cfg.paths.raw / "utterances.parquet")
    held = utterances[(utterances.split == "heldout") & (utterances.task.isin(["aqa", "rqa"]))].sort_values("id")
    if held.empty:
        raise RuntimeError("the corpus has no held-out spoken question to test the service with")
    row = held.iloc[0]
    return cfg.paths.raw / row.audio_path, row.text


def _stream(client: httpx.Client, url: str, route: str, expect_audio: bool | None, **request) -> dict:
    """POST an NDJSON route; ``expect_audio`` True/False checks for (no) audio, None accepts either."""
    start = time.perf_counter()
    first_audio_ms, text, audio_samples, sample_rate, done = None, [], 0, None, None
    with client.stream("POST", f"{url}{route}", **request) as response:
        if response.status_code != 200:
            return {"ok": False, "status": response.status_code, "body": response.read().decode()[:500]}
        for line in response.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "text.delta":
                text.append(event["text"])
            elif event["type"] == "audio.delta":
                first_audio_ms = first_audio_ms or (time.perf_counter() - start) * 1000
                audio_samples += len(base64.b64decode(event["audio"])) // 2  # int16 PCM
                sample_rate = event["sample_rate"]
            elif event["type"] == "done":
                done = event
    seconds = audio_samples / sample_rate if sample_rate else 0.0
    return {
        "ok": done is not None and (expect_audio is None or (seconds > 0) == expect_audio),
        "text": "".join(text), "audio_seconds": round(seconds, 2),
        "client_first_audio_ms": None if first_audio_ms is None else round(first_audio_ms, 1),
        "server_timings": done["timings"] if done else None,
    }


def serve_and_check(cfg: ProjectConfig, startup_timeout_s: float = 300.0) -> dict:
    wav, question = _heldout_question_wav(cfg)
    with LocalServer(startup_timeout_s=startup_timeout_s) as url, httpx.Client(timeout=120) as client:
        ready = client.get(f"{url}/readyz").status_code == 200
        with wav.open("rb") as handle:
            spoken = _stream(client, url, "/chat", None, files={"audio": (wav.name, handle, "audio/wav")})
        typed = _stream(client, url, "/chat", False, data={"text": question, "speak": "false"})
        tts = _stream(client, url, "/tts", True, data={"text": question})
        with wav.open("rb") as handle:
            asr = client.post(f"{url}/asr", files={"audio": (wav.name, handle, "audio/wav")})
    result = {
        "url": url, "ready": ready, "question": question,
        "spoken_chat": spoken, "text_chat": typed, "tts": tts,
        "asr": asr.json() if asr.status_code == 200 else {"status": asr.status_code},
    }
    result["ok"] = bool(ready and spoken["ok"] and typed["ok"] and tts["ok"] and asr.status_code == 200)
    log.info("service check %s: %s", "passed" if result["ok"] else "FAILED", json.dumps(result, default=str)[:800])
    return result
