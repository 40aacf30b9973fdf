"""HTTP routes of the speech service (FastAPI, mounted into the BentoML service by ``service.py``).

Every route validates before it generates, so a bad request costs no model time and gets its documented
status (the table in :data:`ERRORS`); generation runs in worker threads, one fresh :class:`Session` per
request, at most ``max_concurrency`` at once (others wait ``queue_timeout_s``, then 503 + Retry-After).
Answers stream as NDJSON: ``text.delta`` / ``audio.delta`` events, then one ``done`` with timings.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.staticfiles import StaticFiles

from pydantic import ValidationError

from deeptalk.inference import schemas
from deeptalk.inference.audio_codec_io import AudioInputError, load_upload
from deeptalk.inference.engine import Busy, Engine, UnknownVoice, UnknownWords
from deeptalk.inference.events import Done, Event

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
# status → when (documented in the OpenAPI description and the README of the service)
ERRORS = {
    400: "malformed request: bad JSON/form, neither or both of audio and text, empty or corrupt audio, bad flags",
    401: "DEEPTALK_API_KEY is set and the request lacks it (header `Authorization: Bearer <key>` or `X-API-Key`)",
    413: "upload over max_upload_bytes, audio over max_upload_seconds, text over max_text_chars",
    415: "audio that is not WAV or FLAC, or a body type other than multipart form, JSON or audio/*",
    422: "unknown voice, or text with words the model's vocabulary lacks (the message names them)",
    503: "at capacity (Retry-After header) or still loading",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class EngineHolder:
    """Set once by the service after loading and warming up the model; routes answer 503 until then."""

    def __init__(self, engine: Engine | None = None):
        self.engine = engine

    def get(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": "5"})
        return self.engine


def check_api_key(headers: Any, query: Any = None) -> None:
    """401 unless the key from ``$DEEPTALK_API_KEY`` (when set) is presented; constant-time comparison."""
    expected = os.environ.get("DEEPTALK_API_KEY", "")
    if not expected:
        return
    auth = headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
    if not given and query is not None:
        given = query.get("api_key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong API key")


def map_error(err: Exception) -> ApiError:
    """The documented status for an input error raised by the inference layer."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, AudioInputError):
        return ApiError(err.status, err.code, str(err))
    if isinstance(err, UnknownVoice):
        return ApiError(422, "unknown_voice", str(err))
    if isinstance(err, UnknownWords):
        return ApiError(422, "unknown_words", str(err))
    if isinstance(err, Busy):
        return ApiError(503, "busy", str(err), {"Retry-After": str(err.retry_after_s)})
    if isinstance(err, ValueError):
        return ApiError(422, "unprocessable", str(err))
    raise err


def describe_validation(err: ValidationError | RequestValidationError) -> str:
    """``field: problem; …`` from a pydantic error (no Python reprs, no URLs)."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


class ChatRequest:
    """Parsed body of /chat and /tts: optional audio bytes, text, voice, speak."""

    def __init__(self, audio: bytes | None, text: str | None, voice: str | None, speak: bool):
        self.audio, self.text, self.voice, self.speak = audio, text, voice, speak


async def parse_request(request: Request, engine: Engine) -> ChatRequest:
    cfg = engine.config
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cfg.max_upload_bytes + 65536:
        raise ApiError(
            413, "too_large", f"request body of {length} bytes exceeds the {cfg.max_upload_bytes} limit"
        )
    fields: dict[str, Any] = dict(request.query_params)
    audio: bytes | None = None
    if ctype == "multipart/form-data" or ctype == "application/x-www-form-urlencoded":
        try:
            form = await request.form(max_files=2, max_fields=20, max_part_size=cfg.max_upload_bytes + 65536)
        except Exception as err:  # starlette raises its own MultiPartException / HTTPException here
            raise ApiError(400, "bad_request", f"malformed form body: {err}") from err
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
    text, voice, speak = parsed.text, parsed.voice or None, parsed.speak
    return ChatRequest(audio, text, voice, speak)


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


def decode_audio(data: bytes, engine: Engine):
    cfg = engine.config
    return load_upload(
        data,
        max_bytes=cfg.max_upload_bytes,
        max_seconds=cfg.max_upload_seconds,
        sample_rate=engine.audio_input.sample_rate,
    )


class Generation:
    """A started answer: holds a capacity slot until its event stream ends, however it ends."""

    def __init__(self, engine: Engine, session, events: Iterator[Event]):
        self.engine, self.session, self.events = engine, session, events
        self.first: Event | None = None

    @classmethod
    async def start(cls, engine: Engine, make_events) -> Generation:
        """Take a slot (503 when none frees up), create the session and run to the first event, so input
        errors found while building the prompt still become a proper status code."""
        try:
            await run_in_threadpool(engine.acquire)
        except Busy as err:
            raise map_error(err) from err
        try:
            session = engine.session()
            events = await run_in_threadpool(make_events, session)  # features + prompt: off the event loop
            gen = cls(engine, session, events)
            gen.first = await run_in_threadpool(next, events)
            return gen
        except Exception as err:
            engine.release()
            raise map_error(err) from err

    async def stream(self) -> AsyncIterator[Event]:
        try:
            event = self.first
            while event is not None:
                yield event
                event = await run_in_threadpool(next, self.events, None)
        finally:
            self.session.interrupt()  # a client that went away stops the generation within one step
            try:
                await run_in_threadpool(self.events.close)
            finally:
                self.engine.release()


def create_app(holder: EngineHolder, static_dir: str | Path | None = None) -> FastAPI:
    app = FastAPI(
        title="DeepTalk",
        version="0.1.0",
        description="Speech-in, speech-out dialogue with a modality-specific MoE. Errors: "
        + "; ".join(f"{k}: {v}" for k, v in ERRORS.items()),
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": err.code, "message": err.message}}, err.status, headers=err.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": {"code": "bad_request", "message": describe_validation(err)}}, 400)

    default_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's document plus the models the hand-declared request/response bodies refer to."""
        if app.openapi_schema is None:
            doc = default_openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas.components())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def ndjson(gen: Generation) -> StreamingResponse:
        fmt = gen.engine.config.pcm_format

        async def lines() -> AsyncIterator[bytes]:
            async for event in gen.stream():
                yield (json.dumps(event.to_json(fmt)) + "\n").encode()

        return StreamingResponse(lines(), media_type=NDJSON, headers={"Cache-Control": "no-store"})

    @app.post(
        "/chat",
        summary="Answer a spoken (WAV/FLAC upload) or written user turn; streams NDJSON events",
        description="Body: JSON `{text, voice, speak}`, a multipart form (`audio` file or `text`, `voice`, "
        "`speak`), or the raw WAV/FLAC file (then `voice` and `speak` as query parameters).",
        responses=schemas.responses(ERRORS, schemas.AnswerEvent, NDJSON),
        openapi_extra={
            **schemas.request_body(json=schemas.ChatJSON, form=schemas.ChatForm, audio=True),
            "parameters": schemas.query_parameters(schemas.ChatFields, ("voice", "speak")),
        },
    )
    async def chat(request: Request) -> StreamingResponse:
        check_api_key(request.headers)
        engine = holder.get()
        req = await parse_request(request, engine)
        if (req.audio is None) == (req.text is None):
            raise ApiError(400, "bad_request", "send exactly one of an audio file ('audio') or 'text'")
        try:
            voice = engine.check_voice(req.voice)
            audio = await run_in_threadpool(decode_audio, req.audio, engine) if req.audio is not None else None
        except ValueError as err:
            raise map_error(err) from err
        text = validate_text(req.text, engine) if req.text is not None else None
        gen = await Generation.start(
            engine, lambda s: s.respond(audio=audio, text=text, speak=req.speak, voice=voice)
        )
        return ndjson(gen)

    @app.post(
        "/tts",
        summary="Speak a text (the model repeats it); streams NDJSON events",
        responses=schemas.responses(ERRORS, schemas.AnswerEvent, NDJSON),
        openapi_extra=schemas.request_body(json=schemas.TTSFields, form=schemas.TTSFields),
    )
    async def tts(request: Request) -> StreamingResponse:
        check_api_key(request.headers)
        engine = holder.get()
        req = await parse_request(request, engine)
        if req.text is None or req.audio is not None:
            raise ApiError(400, "bad_request", "send 'text' (and optionally 'voice'), no audio")
        try:
            voice = engine.check_voice(req.voice)
        except ValueError as err:
            raise map_error(err) from err
        text = validate_text(req.text, engine)
        return ndjson(await Generation.start(engine, lambda s: s.synthesize(text, voice=voice)))

    @app.post(
        "/asr",
        summary="Transcribe a WAV/FLAC upload; returns JSON {text, reason, timings}",
        responses=schemas.responses(ERRORS, schemas.Transcript),
        openapi_extra=schemas.request_body(form=schemas.ASRForm, audio=True),
    )
    async def asr(request: Request) -> JSONResponse:
        check_api_key(request.headers)
        engine = holder.get()
        req = await parse_request(request, engine)
        if req.audio is None or req.text is not None:
            raise ApiError(400, "bad_request", "send an audio file ('audio'), no text")
        try:
            audio = await run_in_threadpool(decode_audio, req.audio, engine)
        except ValueError as err:
            raise map_error(err) from err
        gen = await Generation.start(engine, lambda s: s.transcribe(audio))
        done = None
        async for event in gen.stream():
            if isinstance(event, Done):
                done = event
        return JSONResponse({"text": done.text, "reason": done.reason, "timings": asdict(done.timings)})

    @app.get("/voices", summary="Voices the model can answer in (besides the default)")
    async def voices() -> dict:
        engine = holder.get()
        return {"voices": list(engine.voices), "default": engine.default_voice}

    @app.get("/info", summary="Model metadata, limits and audio formats")
    async def info() -> dict:
        engine = holder.get()
        cfg = engine.config
        return {
            "model": engine.metadata or {},
            "voices": list(engine.voices),
            "output_sample_rate": engine.codec.sample_rate,
            "input_sample_rate": engine.audio_input.sample_rate,
            "pcm_format": cfg.pcm_format,
            "limits": {
                "max_upload_bytes": cfg.max_upload_bytes,
                "max_upload_seconds": cfg.max_upload_seconds,
                "max_text_chars": cfg.max_text_chars,
                "max_concurrency": cfg.max_concurrency,
            },
        }

    from deeptalk.inference.realtime import add_realtime_route

    add_realtime_route(app, holder)

    if static_dir is not None and Path(static_dir).is_dir():
        static_dir = Path(static_dir)
        app.mount("/static", StaticFiles(directory=static_dir), name="static")

        @app.get("/demo", include_in_schema=False)
        async def demo() -> FileResponse:
            return FileResponse(static_dir / "index.html")

    return app
