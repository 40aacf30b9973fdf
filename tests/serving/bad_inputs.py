"""The bad-input suite shared by the in-process API tests and the end-to-end server tests.

Each case is a request (httpx keyword arguments) and the documented status it must get (see
``deeptalk.serving.errors.ERRORS``). Limits assume the test service config: 3 s / 400 kB uploads, 500 chars.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf


def wav_bytes(
    seconds: float = 0.5,
    sr: int = 16000,
    channels: int = 1,
    fmt: str = "WAV",
    subtype: str = "PCM_16",
    fill: float | None = None,
) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    if fill is not None:
        wav[:] = fill
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    kwargs: dict = field(default_factory=dict)
    auth: bool = True  # send the API key (when the server has one)


def _file(data: bytes, name: str = "q.wav", ctype: str = "audio/wav") -> dict:
    return {"files": {"audio": (name, data, ctype)}}


CORRUPT_WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40
NAN_WAV = wav_bytes(0.3, subtype="FLOAT", fill=float("nan"))

CASES = [
    Case("no content type", "POST", "/chat", 400, {"content": b"hello"}),
    Case(
        "malformed json",
        "POST",
        "/chat",
        400,
        {"content": b"{text:", "headers": {"content-type": "application/json"}},
    ),
    Case("json array", "POST", "/chat", 400, {"json": ["hello"]}),
    Case("neither text nor audio", "POST", "/chat", 400, {"json": {}}),
    Case("both text and audio", "POST", "/chat", 400, {**_file(wav_bytes()), "data": {"text": "hello"}}),
    Case("blank text", "POST", "/chat", 400, {"json": {"text": "   "}}),
    Case("text not a string", "POST", "/chat", 400, {"json": {"text": 42}}),
    Case("text too long", "POST", "/chat", 413, {"json": {"text": "hello " * 200}}),
    Case("unknown voice", "POST", "/chat", 422, {"json": {"text": "hello", "voice": "darth"}}),
    Case("unknown words", "POST", "/chat", 422, {"json": {"text": "hello zebra, hello qwxz"}}),
    Case("unknown words in a form", "POST", "/chat", 422, {"data": {"text": "héllo", "speak": "false"}}),
    Case("tts unknown words", "POST", "/tts", 422, {"json": {"text": "say zebra"}}),
    Case("bad speak flag", "POST", "/chat", 400, {"json": {"text": "hello", "speak": "maybe"}}),
    Case("unknown field", "POST", "/chat", 400, {"json": {"text": "hello", "temperature": 3}}),
    Case("empty audio file", "POST", "/chat", 400, _file(b"")),
    Case("corrupt wav", "POST", "/chat", 400, _file(CORRUPT_WAV)),
    Case("truncated wav", "POST", "/chat", 400, _file(wav_bytes(1.0)[:12000])),
    Case("nan samples", "POST", "/chat", 400, _file(NAN_WAV)),
    Case(
        "mp3 upload",
        "POST",
        "/chat",
        415,
        _file(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 400, "q.mp3", "audio/mpeg"),
    ),
    Case("ogg upload", "POST", "/chat", 415, _file(b"OggS" + b"\x00" * 200, "q.ogg", "audio/ogg")),
    Case(
        "text/plain body",
        "POST",
        "/chat",
        415,
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
    ),
    Case("audio too long", "POST", "/chat", 413, _file(wav_bytes(4.0, sr=8000))),
    Case("upload too many bytes", "POST", "/chat", 413, _file(wav_bytes(2.9, sr=96000, channels=2))),
    Case("wrong file field", "POST", "/chat", 400, {"files": {"sound": ("q.wav", wav_bytes(), "audio/wav")}}),
    Case("raw body empty", "POST", "/chat", 400, {"content": b"", "headers": {"content-type": "audio/wav"}}),
    Case("asr with text", "POST", "/asr", 400, {"json": {"text": "hello"}}),
    Case("asr flac corrupt", "POST", "/asr", 400, _file(b"fLaC" + b"\x01" * 100, "q.flac", "audio/flac")),
    Case("tts without text", "POST", "/tts", 400, {"json": {"voice": "joe"}}),
    Case("tts unknown voice", "POST", "/tts", 422, {"json": {"text": "hello", "voice": "nobody"}}),
    Case("tts with audio", "POST", "/tts", 400, _file(wav_bytes())),
    Case("missing api key", "POST", "/chat", 401, {"json": {"text": "hello"}}, auth=False),
    Case(
        "wrong api key",
        "POST",
        "/chat",
        401,
        {"json": {"text": "hello"}, "headers": {"x-api-key": "nope"}},
        auth=False,
    ),
    Case("wrong method", "GET", "/chat", 405),
]


def with_key(case: Case, key: str | None) -> dict:
    """httpx keyword arguments of a case, with the API key header added when the case authenticates."""
    kwargs = {k: v for k, v in case.kwargs.items()}
    if key and case.auth:
        kwargs["headers"] = {**kwargs.get("headers", {}), "authorization": f"Bearer {key}"}
    return kwargs


def wrong_statuses(base_url: str, key: str | None) -> list[tuple[str, int, str]]:
    """Send every case to a running server; ``(case, status, body)`` of each that did not get its status."""
    import httpx

    wrong = []
    for case in CASES:
        r = httpx.request(case.method, f"{base_url}{case.path}", timeout=60, **with_key(case, key))
        if r.status_code != case.status:
            wrong.append((case.name, r.status_code, r.text[:200]))
    return wrong
