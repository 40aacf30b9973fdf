"""WebSocket ``/realtime`` (also ``/v1/realtime``): a conversation over one connection, events in the spirit of
OpenAI Realtime.

Client → server (JSON text frames; binary frames are raw PCM16 appended to the input buffer):

- ``session.update`` ``{"session": {"voice": str|null, "speak": bool, "input_sample_rate": int}}``
- ``input_audio_buffer.append`` ``{"audio": base64 PCM16 LE mono}``; ``input_audio_buffer.commit``;
  ``input_audio_buffer.clear``
- ``conversation.item.create`` ``{"item": {"role": "user", "content": [{"type": "input_text", "text": str}]}}``
- ``response.create`` (optional ``{"response": {"modalities": ["text"] | ["text", "audio"], "voice": str}}``)
- ``response.cancel``: barge-in, the running answer stops within one decode step

Server → client: ``session.created``, ``session.updated``, ``input_audio_buffer.committed``,
``conversation.item.input_audio_transcription.delta`` ``{"delta", "transcript"}`` while audio arrives (every
``PARTIAL_SECONDS`` of new input, for a model with a CTC head: what it has heard so far; a later transcript may
revise an earlier one, ``delta`` is set only when it extends it) and ``...completed`` ``{"transcript"}`` on commit,
``conversation.item.created``, ``response.created``, ``response.text.delta`` ``{"delta"}``,
``response.audio.delta`` ``{"delta": base64 PCM, "sample_rate", "format"}``, ``response.done``
``{"response": {"text", "reason", "timings"}}``, and ``error`` ``{"error": {"code", "message"}}``. Errors
never close the connection; the conversation (history) lives as long as the connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from deeptalk.inference.engine import Engine
from deeptalk.inference.events import AudioChunk, Done, Event, TextDelta
from deeptalk.serving.auth import check_api_key
from deeptalk.serving.capacity import Busy, Capacity, EngineHolder
from deeptalk.serving.errors import ApiError, map_error
from deeptalk.serving.uploads import AudioInputError, load_pcm16

log = logging.getLogger(__name__)

PARTIAL_SECONDS = 0.5  # new input audio between two partial transcripts while the user speaks


class RealtimeConnection:
    """One WebSocket client: its session, input buffer and at most one running response."""

    def __init__(
        self,
        ws: WebSocket,
        engine: Engine,
        capacity: Capacity,
        observe: Callable[[Iterator[Event]], Iterator[Event]] = lambda events: events,
    ):
        self.ws, self.engine, self.capacity, self.observe = ws, engine, capacity, observe
        self.session = engine.session()
        self.buffer = bytearray()
        self.input_sample_rate = engine.audio_input.sample_rate
        self.speak = True
        self.pending: dict[str, Any] | None = None  # the committed user turn: {"audio": wav} or {"text": str}
        self.task: asyncio.Task | None = None
        self._cancelled = False  # response.cancel seen for the current response
        self._send_lock = asyncio.Lock()
        self.hears = engine.hears_text
        self._heard = ""  # the last partial transcript sent for the current input buffer
        self._heard_at = 0  # buffer bytes it covered
        self._hearing: asyncio.Task | None = None

    async def send(self, event: dict) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(event))

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "error": {"code": code, "message": message, **extra}})

    async def run(self) -> None:
        cfg = self.engine.config
        await self.send(
            {
                "type": "session.created",
                "session": {
                    "voices": list(self.engine.voices),
                    "voice": self.session.voice,
                    "speak": self.speak,
                    "input_sample_rate": self.input_sample_rate,
                    "output_sample_rate": self.engine.codec.sample_rate,
                    "pcm_format": cfg.pcm_format,
                    "max_input_seconds": cfg.max_upload_seconds,
                },
            }
        )
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    await self._append(msg["bytes"])
                    continue
                try:
                    event = json.loads(msg.get("text") or "")
                except json.JSONDecodeError as err:
                    await self.error("bad_request", f"malformed JSON: {err}")
                    continue
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    await self.error("bad_request", "each event must be a JSON object with a string 'type'")
                    continue
                await self._dispatch(event)
        except WebSocketDisconnect:
            pass
        finally:
            self.session.interrupt()
            if self.task is not None:
                await asyncio.gather(self.task, return_exceptions=True)

    # ---- client events ------------------------------------------------------------------------------------
    async def _dispatch(self, event: dict) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            try:
                data = base64.b64decode(event.get("audio", ""), validate=True)
            except (binascii.Error, ValueError, TypeError):
                await self.error("bad_request", "input_audio_buffer.append needs base64 PCM16 in 'audio'")
                return
            await self._append(data)
        elif kind == "input_audio_buffer.commit":
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            self.buffer.clear()
            self._reset_hearing()
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            await self._text_item(event.get("item"))
        elif kind == "session.update":
            await self._update(event.get("session"))
        elif kind == "response.create":
            await self._create(event.get("response") or {})
        elif kind == "response.cancel":
            if self.task is None:
                await self.error("no_response", "there is no response to cancel")
            else:
                self._cancelled = True  # also covers a response still waiting for a slot
                self.session.interrupt()
        else:
            await self.error("unknown_event", f"unknown event type {kind!r}")

    async def _append(self, data: bytes) -> None:
        limit = self.engine.config.max_upload_seconds * self.input_sample_rate * 2
        if len(self.buffer) + len(data) > limit:
            self.buffer.clear()
            self._reset_hearing()
            await self.error(
                "too_large",
                f"input audio exceeds {self.engine.config.max_upload_seconds} s; the buffer was cleared",
            )
            return
        self.buffer.extend(data)
        new_bytes = len(self.buffer) - self._heard_at
        if self.hears and new_bytes >= PARTIAL_SECONDS * self.input_sample_rate * 2 and (
            self._hearing is None or self._hearing.done()
        ):
            self._heard_at = len(self.buffer)
            self._hearing = asyncio.create_task(self._partial_transcript(bytes(self.buffer)))

    async def _transcribe(self, pcm: bytes) -> str | None:
        """What the CTC head hears in ``pcm`` (in a worker thread); None when the audio cannot be read."""
        try:
            wav = load_pcm16(pcm, self.input_sample_rate, max_seconds=self.engine.config.max_upload_seconds,
                             sample_rate=self.engine.audio_input.sample_rate)
        except AudioInputError:
            return None
        return await asyncio.to_thread(self.session.heard_text, wav)

    async def _partial_transcript(self, pcm: bytes) -> None:
        text = await self._transcribe(pcm)
        if text is None or text == self._heard:
            return
        delta = text[len(self._heard):] if text.startswith(self._heard) else None
        self._heard = text
        await self.send({"type": "conversation.item.input_audio_transcription.delta", "delta": delta,
                         "transcript": text})

    def _reset_hearing(self) -> None:
        self._heard, self._heard_at = "", 0

    async def _commit(self) -> bool:
        cfg = self.engine.config
        try:
            wav = load_pcm16(
                bytes(self.buffer),
                self.input_sample_rate,
                max_seconds=cfg.max_upload_seconds,
                sample_rate=self.engine.audio_input.sample_rate,
            )
        except AudioInputError as err:
            self._reset_hearing()
            await self.error(err.code, str(err))
            return False
        finally:
            self.buffer.clear()
        self.pending = {"audio": wav}
        await self.send({"type": "input_audio_buffer.committed", "seconds": round(len(wav) / 16000, 3)})
        if self.hears:
            if self._hearing is not None:
                await asyncio.gather(self._hearing, return_exceptions=True)  # partials arrive before the final one
            transcript = await asyncio.to_thread(self.session.heard_text, wav)
            await self.send({"type": "conversation.item.input_audio_transcription.completed", "transcript": transcript})
        self._reset_hearing()
        return True

    async def _text_item(self, item: Any) -> None:
        text = None
        if isinstance(item, dict) and item.get("role", "user") == "user":
            parts = item.get("content")
            if isinstance(parts, list):
                text = " ".join(
                    p.get("text", "")
                    for p in parts
                    if isinstance(p, dict)
                    and p.get("type") in ("input_text", "text")
                    and isinstance(p.get("text"), str)
                )
            elif isinstance(item.get("text"), str):
                text = item["text"]
        if not text or not text.strip():
            await self.error("bad_request", "conversation.item.create needs a user message with input_text")
            return
        if len(text) > self.engine.config.max_text_chars:
            await self.error("too_large", f"text over {self.engine.config.max_text_chars} characters")
            return
        try:
            self.engine.check_text(text)
        except ValueError as err:  # words the vocabulary lacks: refused before any generation
            api = map_error(err)
            await self.error(api.code, api.message)
            return
        self.pending = {"text": text}
        await self.send({"type": "conversation.item.created", "item": {"role": "user", "text": text}})

    async def _update(self, session: Any) -> None:
        if not isinstance(session, dict):
            await self.error("bad_request", "session.update needs a 'session' object")
            return
        try:
            if "voice" in session:
                self.session.voice = self.engine.check_voice(session["voice"]) or self.engine.default_voice
            if "speak" in session:
                if not isinstance(session["speak"], bool):
                    raise ApiError(400, "bad_request", "speak must be a boolean")
                self.speak = session["speak"]
            if "input_sample_rate" in session:
                sr = session["input_sample_rate"]
                if not isinstance(sr, int) or not 8000 <= sr <= 96000:
                    raise ApiError(
                        400, "bad_request", "input_sample_rate must be an integer in [8000, 96000]"
                    )
                self.input_sample_rate = sr
        except (ValueError, ApiError) as err:
            api = map_error(err)
            await self.error(api.code, api.message)
            return
        await self.send(
            {
                "type": "session.updated",
                "session": {
                    "voice": self.session.voice,
                    "speak": self.speak,
                    "input_sample_rate": self.input_sample_rate,
                },
            }
        )

    async def _create(self, options: Any) -> None:
        if self.task is not None:
            await self.error("response_in_progress", "a response is running; cancel it first")
            return
        if not isinstance(options, dict):
            await self.error("bad_request", "'response' must be an object")
            return
        if self.pending is None and self.buffer and not await self._commit():
            return
        if self.pending is None:
            await self.error("no_input", "commit audio or create a text item before response.create")
            return
        speak = self.speak
        if "modalities" in options:
            speak = "audio" in (options.get("modalities") or [])
        try:
            voice = self.engine.check_voice(options["voice"]) if options.get("voice") else None
        except ValueError as err:
            api = map_error(err)
            await self.error(api.code, api.message)
            return
        turn, self.pending = self.pending, None
        self._cancelled = False
        self.task = asyncio.create_task(self._respond(turn, speak, voice))

    # ---- the response -------------------------------------------------------------------------------------
    async def _respond(self, turn: dict, speak: bool, voice: str | None) -> None:
        fmt = self.engine.config.pcm_format
        try:
            try:
                await run_in_threadpool(self.capacity.acquire)
            except Busy as err:
                await self.error("busy", str(err), retry_after=err.retry_after_s)
                return
            try:
                # features + prompt building off the event loop
                events = await run_in_threadpool(
                    lambda: self.observe(self.session.respond(**turn, speak=speak, voice=voice))
                )
                if self._cancelled:  # cancelled before generation started
                    self.session.interrupt()
                await self.send({"type": "response.created"})
                while (event := await run_in_threadpool(next, events, None)) is not None:
                    if isinstance(event, TextDelta):
                        await self.send({"type": "response.text.delta", "delta": event.text})
                    elif isinstance(event, AudioChunk):
                        await self.send(
                            {
                                "type": "response.audio.delta",
                                "delta": base64.b64encode(event.encode(fmt)).decode("ascii"),
                                "sample_rate": event.sample_rate,
                                "format": fmt,
                            }
                        )
                    elif isinstance(event, Done):
                        self.task = None  # the client may start the next response as soon as it sees done
                        await self.send(
                            {
                                "type": "response.done",
                                "response": {
                                    "text": event.text,
                                    "reason": event.reason,
                                    "timings": asdict(event.timings),
                                },
                            }
                        )
            except ValueError as err:
                api = map_error(err)
                await self.error(api.code, api.message)
            finally:
                self.capacity.release()
        except Exception as err:  # a dead socket or a model error ends this response, never the server
            log.warning("realtime response failed: %s", err)
            self.session.interrupt()
        finally:
            if self.task is asyncio.current_task():
                self.task = None


# the root path, and the one the OpenAI SDK's realtime client uses with its habitual ``.../v1`` base URL
REALTIME_PATHS = ("/realtime", "/v1/realtime")


def add_realtime_route(app: FastAPI, holder: EngineHolder) -> None:
    async def realtime(ws: WebSocket) -> None:
        try:
            check_api_key(ws.headers, ws.query_params)
        except ApiError as err:
            body = JSONResponse(err.body(), err.status)
            try:
                await ws.send_denial_response(body)  # HTTP 401 on the handshake where the server supports it
            except RuntimeError:
                await ws.close(code=4401, reason=err.message)
            return
        if holder.engine is None:
            await ws.close(code=1013, reason="the model is still loading")
            return
        await ws.accept()
        await RealtimeConnection(ws, holder.engine, holder.capacity, holder.observe).run()

    for path in REALTIME_PATHS:
        app.add_api_websocket_route(path, realtime)
