"""The optional API key: when ``$DEEPTALK_API_KEY`` is set, every route and the WebSocket require it."""

from __future__ import annotations

import hmac
import os
from typing import Any

from deeptalk.serving.errors import ApiError

API_KEY_ENV = "DEEPTALK_API_KEY"


def check_api_key(headers: Any, query: Any = None) -> None:
    """401 unless the key is presented as ``Authorization: Bearer``, ``X-API-Key`` or (``query``, the WebSocket)
    ``?api_key=``; constant-time comparison."""
    expected = os.environ.get(API_KEY_ENV, "")
    if not expected:
        return
    auth = headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
    if not given and query is not None:
        given = query.get("api_key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong API key")
