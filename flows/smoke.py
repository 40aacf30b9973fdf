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
import numpy as np

from deeptalk.config import ProjectConfig
from deeptalk.evaluation.heldout import QAItem, load_heldout
from deeptalk.evaluation.service_check import MIN_QUESTIONS, N_EXAMPLES, ServedAnswer, judge_service
from deeptalk.inference.events import decode_pcm
from deeptalk.serving.local_server import LocalServer

TTS_TEXTS = 3  # /tts calls of the served check; at least 2 of 3 must stream audio

log = logging.getLogger(__name__)


def heldout_questions(cfg: ProjectConfig) -> tuple[QAItem, ...]:
    """The held-out spoken questions the service is judged on (held-out voices, one per expected answer)."""
    n = cfg.evaluation.distinct_questions
    items = load_heldout(cfg.paths.raw, max_spoken_qa=n, speakers=cfg.data.heldout_speakers).spoken_qa
    if len(items) < MIN_QUESTIONS:
        raise RuntimeError(f"the corpus has {len(items)} held-out spoken questions in held-out voices; the "
                           f"service check needs at least {MIN_QUESTIONS}")
    return items


def _stream(client: httpx.Client, url: str, route: str, expect_audio: bool | None, keep_audio: bool = False,
            **request) -> dict:
    """POST an NDJSON route; ``expect_audio`` True/False checks for (no) audio, None accepts either.
    ``keep_audio`` returns the streamed PCM (float32) under ``pcm``."""
    start = time.perf_counter()
    first_audio_ms, text, audio_samples, sample_rate, done = None, [], 0, None, None
    chunks: list[np.ndarray] = []
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
                data = base64.b64decode(event["audio"])
                audio_samples += len(data) // 2  # int16 PCM
                sample_rate = event["sample_rate"]
                if keep_audio:
                    chunks.append(decode_pcm(data, event.get("format", "int16")))
            elif event["type"] == "done":
                done = event
    seconds = audio_samples / sample_rate if sample_rate else 0.0
    out = {
        "ok": done is not None and (expect_audio is None or (seconds > 0) == expect_audio),
        "text": "".join(text), "audio_seconds": round(seconds, 2),
        "client_first_audio_ms": None if first_audio_ms is None else round(first_audio_ms, 1),
        "server_timings": done["timings"] if done else None,
    }
    if keep_audio:
        out["pcm"] = (np.concatenate(chunks) if chunks else np.zeros(0, np.float32), sample_rate)
    return out


def _asr(client: httpx.Client, url: str, wav: Path) -> dict:
    with wav.open("rb") as handle:
        response = client.post(f"{url}/asr", files={"audio": (wav.name, handle, "audio/wav")})
    if response.status_code != 200:
        return {"ok": False, "status": response.status_code, "text": ""}
    return {"ok": True, **response.json()}


def _ask(client: httpx.Client, url: str, item: QAItem, keep_audio: bool = False) -> dict[str, dict]:
    """One held-out question spoken (/chat, /asr) and typed (/chat, text only)."""
    wav = item.audio_path
    with wav.open("rb") as handle:
        spoken = _stream(client, url, "/chat", None, keep_audio, files={"audio": (wav.name, handle, "audio/wav")})
    typed = _stream(client, url, "/chat", False, data={"text": item.question, "speak": "false"})
    return {"spoken_chat": spoken, "text_chat": typed, "asr": _asr(client, url, wav)}


def heard_back(cfg: ProjectConfig, clips: list) -> list[str | None]:
    """What the offline Whisper scorer hears in each spoken answer (None: no audio, or no scorer)."""
    if not any(c is not None and len(c[0]) for c in clips):
        return [None] * len(clips)
    try:
        from deeptalk.evaluation.asr_scorer import scorer_for

        scorer = scorer_for(cfg)
    except (ImportError, RuntimeError, ValueError) as err:
        log.warning("no heard-back transcripts: %s", err)
        return [None] * len(clips)
    return [scorer.transcribe(pcm, sr) if pcm is not None and len(pcm) else None
            for pcm, sr in (c or (None, None) for c in clips)]


def serve_and_check(cfg: ProjectConfig, startup_timeout_s: float = 300.0) -> dict:
    """Serve the packaged model, ask it the held-out questions, judge the answers; the summary's ``ok``."""
    items = heldout_questions(cfg)
    calls: list[dict[str, dict]] = []
    with LocalServer(startup_timeout_s=startup_timeout_s) as url, httpx.Client(timeout=120) as client:
        ready = client.get(f"{url}/readyz").status_code == 200
        for i, item in enumerate(items):
            calls.append(_ask(client, url, item, keep_audio=i < N_EXAMPLES))
        # several texts: the tiny model stays silent on ~1 in 10 (evaluate's tts.no_audio), so one call was a coin
        # flip; a model that rarely speaks still fails
        spoken = [_stream(client, url, "/tts", True, data={"text": item.question}) for item in items[:TTS_TEXTS]]
    with_audio = sum(t["ok"] for t in spoken)
    tts = {**spoken[0], "ok": with_audio * 3 >= 2 * len(spoken), "with_audio": f"{with_audio}/{len(spoken)}"}
    answers = [ServedAnswer(item.question, item.references, c["spoken_chat"]["text"], c["text_chat"]["text"],
                            c["asr"]["text"]) for item, c in zip(items, calls)]
    judgement = judge_service(answers, cfg.evaluation.gates, cfg.evaluation.distinct_questions)
    heard = heard_back(cfg, [c["spoken_chat"].pop("pcm", None) for c in calls[:N_EXAMPLES]])
    broken = [f"{item.id} {route}" for item, c in zip(items, calls) for route, r in c.items() if not r["ok"]]
    protocol_ok = bool(ready and tts["ok"] and not broken)
    result = {
        "url": url, "ready": ready, "questions": len(items), "failed_calls": broken,
        **calls[0], "tts": tts,  # the first question's calls in full, as a protocol example
        "quality": judgement.to_dict(),
        "ok": protocol_ok and judgement.passed,
    }
    result["examples"] = [{**e, "heard": h} for e, h in zip(judgement.examples, heard)]
    for line in judgement.lines():
        log.info("%s", line)
    result["summary"] = judgement.lines()
    if not protocol_ok:
        result["summary"].append(f"protocol FAILED: ready={ready}, /tts streamed audio for {tts['with_audio']} "
                                 f"texts (needs 2/3), failed calls={broken}")
        log.error("service check: %s", result["summary"][-1])
    return result
