"""The service's errors: the documented status table, the exception routes raise, and how input errors of the
inference layer map onto it. Bodies are ``{"error": {"code", "message"}}``; messages are for people (no
Python reprs)."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from deeptalk.inference.engine import UnknownVoice, UnknownWords
from deeptalk.serving.uploads import AudioInputError

# status → when (documented in the OpenAPI description and in docs/service.md)
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

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def map_error(err: Exception) -> ApiError:
    """The documented status for an input error raised by the inference layer (others propagate)."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, AudioInputError):
        return ApiError(err.status, err.code, str(err))
    if isinstance(err, UnknownVoice):
        return ApiError(422, "unknown_voice", str(err))
    if isinstance(err, UnknownWords):
        return ApiError(422, "unknown_words", str(err))
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
