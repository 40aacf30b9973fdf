"""Reading a request before any model time is spent: body type, fields, text and audio checks.

One route accepts a JSON object, a multipart form (or urlencoded form) or the raw WAV/FLAC file; the fields of
all three (and of the query string) are validated by the same pydantic model the OpenAPI document shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from deeptalk.inference.engine import Engine
from deeptalk.serving import schemas
from deeptalk.serving.errors import ApiError, describe_validation, map_error
from deeptalk.serving.uploads import load_upload

FORM_OVERHEAD = 65536  # bytes of multipart framing allowed on top of max_upload_bytes


@dataclass(frozen=True)
class ChatRequest:
    """Parsed body of /chat, /tts and /asr: optional audio bytes, text, voice, speak."""

    audio: bytes | None
    text: str | None
    voice: str | None
    speak: bool


async def parse_request(request: Request, engine: Engine) -> ChatRequest:
    cfg = engine.config
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cfg.max_upload_bytes + FORM_OVERHEAD:
        raise ApiError(
            413, "too_large", f"request body of {length} bytes exceeds the {cfg.max_upload_bytes} limit"
        )
    fields: dict[str, Any] = dict(request.query_params)
    audio: bytes | None = None
    if ctype == "multipart/form-data" or ctype == "application/x-www-form-urlencoded":
        try:
            form = await request.form(
                max_files=2, max_fields=20, max_part_size=cfg.max_upload_bytes + FORM_OVERHEAD
            )
        except Exception as err:  # starlette raises its own MultiPartException / HTTPException here
            raise ApiError(400, "bad_request", f"malformed form body: {getattr(err, 'detail', err)}") from err
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "audio":
                    raise ApiError(
                        400, "bad_request", f"unexpected file field {key!r}; send the audio as 'audio'"
                    )
                audio = await value.read()
                if not audio:
                    raise ApiError(400, "empty_audio", "the audio upload is empty")
            else:
                fields[key] = value
    elif ctype == "application/json":
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, "bad_request", f"malformed JSON: {err}") from err
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "the JSON body must be an object")
        fields.update(body)
    elif ctype.startswith("audio/") or ctype == "application/octet-stream":
        audio = await request.body()
        if not audio:
            raise ApiError(400, "empty_audio", "the audio upload is empty")
    elif ctype == "":
        raise ApiError(
            400, "bad_request", "missing Content-Type; send multipart/form-data, JSON or audio/wav"
        )
    else:
        raise ApiError(415, "unsupported_media_type", f"unsupported body type {ctype!r}")
    fields.pop("api_key", None)  # the WebSocket's way to pass the key; harmless here
    try:
        parsed = schemas.ChatFields.model_validate(fields)
    except ValidationError as err:
        raise ApiError(400, "bad_request", f"bad field(s): {describe_validation(err)}") from err
    return ChatRequest(audio, parsed.text, parsed.voice or None, parsed.speak)


def validate_text(text: str, engine: Engine) -> str:
    """400 for blank text, 413 over ``max_text_chars``, 422 naming the words the vocabulary lacks."""
    if not text.strip():
        raise ApiError(400, "empty_text", "text is empty")
    if len(text) > engine.config.max_text_chars:
        raise ApiError(
            413, "too_large", f"text has {len(text)} characters; the limit is {engine.config.max_text_chars}"
        )
    try:
        engine.check_text(text)
    except ValueError as err:
        raise map_error(err) from err
    return text


def validate_voice(voice: str | None, engine: Engine) -> str | None:
    try:
        return engine.check_voice(voice)
    except ValueError as err:
        raise map_error(err) from err


def decode_audio(data: bytes, engine: Engine) -> np.ndarray:
    """An uploaded WAV/FLAC as mono float32 at the encoder's rate, or the ApiError of what is wrong with it."""
    cfg = engine.config
    try:
        return load_upload(
            data,
            max_bytes=cfg.max_upload_bytes,
            max_seconds=cfg.max_upload_seconds,
            sample_rate=engine.audio_input.sample_rate,
        )
    except ValueError as err:
        raise map_error(err) from err
