"""The last leg of ``make run``: serve the packaged model with ``bentoml serve`` and judge what it answers.

Over the first ``cfg.evaluation.distinct_questions`` held-out spoken questions in held-out voices (at least
``service_check.MIN_QUESTIONS``), each WAV goes to ``POST /chat`` (answered as served by default; how much of
it is speech is the model's business and the evaluate step's gates) and to ``POST /asr``, and the question
typed goes to ``POST /chat`` with ``speak=false`` (text only, no audio). ``POST /tts`` must stream audio.
``service_check.judge_service`` scores the answers (reference contained, spoken vs typed, distinct answers,
ASR WER against the true question) against the gates of ``cfg.evaluation.gates``. ``ok`` is true only when
every call worked *and* the model passed those gates.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import httpx

from deeptalk.config import ProjectConfig
from deeptalk.evaluation.heldout import QAItem, load_heldout
from deeptalk.evaluation.service_check import MIN_QUESTIONS, ServedAnswer, judge_service
from deeptalk.serving.local_server import LocalServer

log = logging.getLogger(__name__)


def heldout_questions(cfg: ProjectConfig) -> tuple[QAItem, ...]:
    """The held-out spoken questions the service is judged on (held-out voices, one per expected answer)."""
    n = cfg.evaluation.distinct_questions
    items = load_heldout(cfg.paths.raw, max_spoken_qa=n, speakers=cfg.data.heldout_speakers).spoken_qa
    if len(items) < MIN_QUESTIONS:
        raise RuntimeError(f"the corpus has {len(items)} held-out spoken questions in held-out voices; the "
                           f"service check needs at least {MIN_QUESTIONS}")
    return items


def _stream(client: httpx.Client, url: str, route: str, expect_audio: bool | None, **request) -> dict:
    """POST an NDJSON route; ``expect_audio`` True/False checks for (no) audio, None accepts either."""
    start = time.perf_counter()
    first_audio_ms, text, audio_samples, sample_rate, done = None, [], 0, None, None
    with client.stream("POST", f"{url}{route}", **request) as response:
        if response.status_code != 200:
            body = response.read().decode()[:500]
            return {"ok": False, "status": response.status_code, "body": body, "text": ""}
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


def _asr(client: httpx.Client, url: str, wav: Path) -> dict:
    with wav.open("rb") as handle:
        response = client.post(f"{url}/asr", files={"audio": (wav.name, handle, "audio/wav")})
    if response.status_code != 200:
        return {"ok": False, "status": response.status_code, "text": ""}
    return {"ok": True, **response.json()}


def _ask(client: httpx.Client, url: str, item: QAItem) -> dict[str, dict]:
    """One held-out question spoken (/chat, /asr) and typed (/chat, text only)."""
    wav = item.audio_path
    with wav.open("rb") as handle:
        spoken = _stream(client, url, "/chat", None, files={"audio": (wav.name, handle, "audio/wav")})
    typed = _stream(client, url, "/chat", False, data={"text": item.question, "speak": "false"})
    return {"spoken_chat": spoken, "text_chat": typed, "asr": _asr(client, url, wav)}


def serve_and_check(cfg: ProjectConfig, startup_timeout_s: float = 300.0) -> dict:
    """Serve the packaged model, ask it the held-out questions, judge the answers; the summary's ``ok``."""
    items = heldout_questions(cfg)
    calls: list[dict[str, dict]] = []
    with LocalServer(startup_timeout_s=startup_timeout_s) as url, httpx.Client(timeout=120) as client:
        ready = client.get(f"{url}/readyz").status_code == 200
        for item in items:
            calls.append(_ask(client, url, item))
        tts = _stream(client, url, "/tts", True, data={"text": items[0].question})
    answers = [ServedAnswer(item.question, item.references, c["spoken_chat"]["text"], c["text_chat"]["text"],
                            c["asr"]["text"]) for item, c in zip(items, calls)]
    judgement = judge_service(answers, cfg.evaluation.gates, cfg.evaluation.distinct_questions)
    broken = [f"{item.id} {route}" for item, c in zip(items, calls) for route, r in c.items() if not r["ok"]]
    protocol_ok = bool(ready and tts["ok"] and not broken)
    result = {
        "url": url, "ready": ready, "questions": len(items), "failed_calls": broken,
        **calls[0], "tts": tts,  # the first question's calls in full, as a protocol example
        "quality": judgement.to_dict(),
        "ok": protocol_ok and judgement.passed,
    }
    for line in judgement.lines():
        log.info("%s", line)
    result["summary"] = judgement.lines()
    if not protocol_ok:
        result["summary"].append(f"protocol FAILED: ready={ready}, tts ok={tts['ok']}, failed calls={broken}")
        log.error("service check: %s", result["summary"][-1])
    return result
