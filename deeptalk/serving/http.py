"""HTTP routes of the speech service: ``POST /chat``, ``/tts``, ``/asr``, ``GET /voices``, ``/info``.

Every route validates before it generates (:mod:`deeptalk.serving.inputs`), so a bad request costs no model
time and gets its documented status (:data:`deeptalk.serving.errors.ERRORS`); each request gets a fresh
:class:`~deeptalk.inference.session.Session`, at most ``max_concurrency`` at once
(:class:`~deeptalk.serving.capacity.Capacity`), whose decode steps run in the engine's scheduler batch (or alone
in a worker thread when batching is off). Answers stream as NDJSON: ``text.delta`` / ``audio.delta`` events, then
one ``done`` with timings.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from deeptalk.inference.engine import Engine
from deeptalk.inference.events import Done, Event
from deeptalk.inference.session import Session
from deeptalk.serving import schemas
from deeptalk.serving.auth import check_api_key
from deeptalk.serving.capacity import Capacity, EngineHolder
from deeptalk.serving.errors import ERRORS, ApiError, map_error
from deeptalk.serving.inputs import ChatRequest, decode_audio, parse_request, validate_text, validate_voice

NDJSON = "application/x-ndjson"


class Generation:
    """A started answer: holds a capacity slot until its event stream ends, however it ends."""

    def __init__(self, engine: Engine, capacity: Capacity, session: Session, events: Iterator[Event]):
        self.engine, self.capacity, self.session, self.events = engine, capacity, session, events
        self.first: Event | None = None

    @classmethod
    async def start(
        cls, engine: Engine, capacity: Capacity, make_events: Callable[[Session], Iterator[Event]]
    ) -> Generation:
        """Take a slot (503 when none frees up), create the session and run to the first event, so input
        errors found while building the prompt still become a proper status code."""
        await run_in_threadpool(capacity.acquire)
        try:
            session = engine.session()
            events = await run_in_threadpool(make_events, session)  # features + prompt: off the event loop
            gen = cls(engine, capacity, session, events)
            gen.first = await run_in_threadpool(next, events)
            return gen
        except Exception as err:
            capacity.release()
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
                self.capacity.release()

    def ndjson(self) -> StreamingResponse:
        fmt = self.engine.config.pcm_format

        async def lines() -> AsyncIterator[bytes]:
            async for event in self.stream():
                yield (json.dumps(event.to_json(fmt)) + "\n").encode()

        return StreamingResponse(lines(), media_type=NDJSON, headers={"Cache-Control": "no-store"})


def add_http_routes(app: FastAPI, holder: EngineHolder) -> None:
    async def start(engine: Engine, make_events: Callable[[Session], Iterator[Event]]) -> Generation:
        return await Generation.start(engine, holder.capacity, lambda s: holder.observe(make_events(s)))

    async def accept(request: Request) -> tuple[Engine, ChatRequest]:
        """Every generating route's preamble: the key, the loaded engine, the parsed body."""
        check_api_key(request.headers)
        engine = holder.get()
        return engine, await parse_request(request, engine)

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
        engine, req = await accept(request)
        if (req.audio is None) == (req.text is None):
            raise ApiError(400, "bad_request", "send exactly one of an audio file ('audio') or 'text'")
        voice = validate_voice(req.voice, engine)
        audio = await run_in_threadpool(decode_audio, req.audio, engine) if req.audio is not None else None
        text = validate_text(req.text, engine) if req.text is not None else None
        gen = await start(engine, lambda s: s.respond(audio=audio, text=text, speak=req.speak, voice=voice))
        return gen.ndjson()

    @app.post(
        "/tts",
        summary="Speak a text (the model repeats it); streams NDJSON events",
        responses=schemas.responses(ERRORS, schemas.AnswerEvent, NDJSON),
        openapi_extra=schemas.request_body(json=schemas.TTSFields, form=schemas.TTSFields),
    )
    async def tts(request: Request) -> StreamingResponse:
        engine, req = await accept(request)
        if req.text is None or req.audio is not None:
            raise ApiError(400, "bad_request", "send 'text' (and optionally 'voice'), no audio")
        voice = validate_voice(req.voice, engine)
        text = validate_text(req.text, engine)
        return (await start(engine, lambda s: s.synthesize(text, voice=voice))).ndjson()

    @app.post(
        "/asr",
        summary="Transcribe a WAV/FLAC upload; returns JSON {text, reason, timings}",
        responses=schemas.responses(ERRORS, schemas.Transcript),
        openapi_extra=schemas.request_body(form=schemas.ASRForm, audio=True),
    )
    async def asr(request: Request) -> JSONResponse:
        engine, req = await accept(request)
        if req.audio is None or req.text is not None:
            raise ApiError(400, "bad_request", "send an audio file ('audio'), no text")
        audio = await run_in_threadpool(decode_audio, req.audio, engine)
        gen = await start(engine, lambda s: s.transcribe(audio))
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
                "max_queue": cfg.max_queue,
                "max_answer_seconds": cfg.max_answer_seconds,
            },
            "batching": engine.scheduler is not None,
        }
