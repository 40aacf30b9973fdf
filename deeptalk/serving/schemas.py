"""Request and response shapes of the HTTP routes, as pydantic models: the OpenAPI document is built from
them, and the routes validate the fields of every body type (JSON, form, query) with the same models.

The routes read their bodies themselves (one route takes JSON, multipart form or raw audio), so the request
bodies enter the OpenAPI document through :func:`request_body` rather than through typed route arguments.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/flac")
BINARY = {"type": "string", "format": "binary"}  # a file part / raw body

_TEXT = "the user's words; every word must be in the model's vocabulary (else 422)"
_VOICE = "a voice from GET /voices; empty or absent: the default voice"
_SPEAK = "true: the answer streams audio as well as text; false: text only"


class ChatFields(BaseModel):
    """Fields of ``POST /chat`` besides the audio file (JSON body, form fields or query parameters)."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description=_TEXT + "; send either text or an audio file", min_length=1)
    voice: str | None = Field(None, description=_VOICE)
    speak: bool = Field(True, description=_SPEAK)


class ChatJSON(ChatFields):
    """A typed user turn."""

    text: str = Field(description=_TEXT, min_length=1, examples=["what is the capital of france"])


class ChatForm(ChatFields):
    """A spoken user turn (``audio``) or a typed one (``text``), as multipart form fields."""

    audio: bytes | None = Field(None, description="WAV or FLAC, any sample rate, any channels")


class TTSFields(BaseModel):
    """Fields of ``POST /tts``: the text the model says, in which voice."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description=_TEXT, min_length=1, examples=["two plus two is four"])
    voice: str | None = Field(None, description=_VOICE)


class ASRForm(BaseModel):
    """The speech to transcribe."""

    audio: bytes = Field(description="WAV or FLAC, any sample rate, any channels")


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. bad_request, unknown_words, busy")
    message: str = Field(description="what was wrong, for a person")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Timings(BaseModel):
    prefill_ms: float
    first_text_ms: float | None
    first_audio_ms: float | None
    total_ms: float
    steps: int
    audio_seconds: float
    rtf: float | None


class TextDeltaEvent(BaseModel):
    type: Literal["text.delta"]
    text: str


class AudioDeltaEvent(BaseModel):
    type: Literal["audio.delta"]
    audio: str = Field(description="base64 little-endian PCM, mono")
    sample_rate: int
    format: Literal["int16", "float32"]
    samples: int


class DoneEvent(BaseModel):
    type: Literal["done"]
    text: str
    reason: Literal["complete", "max_steps", "interrupted", "deadline"]
    timings: Timings


AnswerEvent = Annotated[TextDeltaEvent | AudioDeltaEvent | DoneEvent, Field(discriminator="type")]


class Transcript(BaseModel):
    text: str
    reason: Literal["complete", "max_steps", "interrupted", "deadline"]
    timings: Timings


_COMPONENTS: dict[str, Any] = {}  # nested models the inline schemas refer to (components/schemas)


def _schema(shape: Any) -> dict[str, Any]:
    """The JSON schema of a model or type; the models it nests go to :func:`components`."""
    schema = TypeAdapter(shape).json_schema(ref_template="#/components/schemas/{model}")
    _COMPONENTS.update(schema.pop("$defs", {}))
    return schema


def components() -> dict[str, Any]:
    """Schemas of the nested models, for the OpenAPI document's ``components.schemas``."""
    return dict(_COMPONENTS)


def _form(model: type[BaseModel]) -> dict[str, Any]:
    """A model as multipart form fields: ``bytes`` as a file part, optional fields simply absent (a form has
    no null)."""
    schema = _schema(model)
    for prop in schema.get("properties", {}).values():
        choices = [c for c in prop.pop("anyOf", [dict(prop)]) if c.get("type") != "null"]
        notes = {k: v for k, v in prop.items() if k in ("description", "title", "examples")}
        prop.clear()
        prop.update({**choices[0], **notes})
    return schema


def request_body(
    json: type[BaseModel] | None = None, form: type[BaseModel] | None = None, audio: bool = False
) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body itself: one entry per accepted content type."""
    content: dict[str, Any] = {}
    if json is not None:
        content["application/json"] = {"schema": _schema(json)}
    if form is not None:
        content["multipart/form-data"] = {"schema": _form(form)}
    if audio:
        for media in AUDIO_TYPES:
            content[media] = {"schema": BINARY}
    return {"requestBody": {"required": True, "content": content}}


def query_parameters(model: type[BaseModel], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Optional query parameters named after some of ``model``'s fields (for a raw audio body)."""
    props = _form(model)["properties"]
    return [
        {"name": n, "in": "query", "required": False, "description": props[n].get("description", ""),
         "schema": {k: v for k, v in props[n].items() if k not in ("description", "title", "examples")}}
        for n in names
    ]


def responses(errors: dict[int, str], ok: Any, ok_media: str = "application/json") -> dict:
    """The ``responses`` of a route: the 200 body and each documented error with the error body."""
    out: dict[int | str, Any] = {
        200: {"description": "the answer", "content": {ok_media: {"schema": _schema(ok)}}},
    }
    for status, when in errors.items():
        out[status] = {"description": when, "content": {"application/json": {"schema": _schema(ErrorBody)}}}
    return out
