"""Schema-driven fuzzing of the HTTP API (schemathesis, in-process): requests generated from the OpenAPI
document, valid and invalid, must never get a server error, and every status must be one the document lists."""

from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from deeptalk.serving.app import create_app
from deeptalk.serving.capacity import EngineHolder
from deeptalk.serving.schemas import AUDIO_TYPES

MAX_EXAMPLES = 12  # per operation: a few dozen requests over /chat, /tts, /asr, /voices, /info in ~10 s


schemathesis.serializer.alias(list(AUDIO_TYPES), "application/octet-stream")  # raw audio bodies: bytes
HOLDER = EngineHolder()  # the document needs no model; the fixture below loads one before each request
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(HOLDER))


@pytest.fixture(autouse=True)
def served(engine, monkeypatch):
    monkeypatch.delenv("DEEPTALK_API_KEY", raising=False)
    HOLDER.engine = replace(engine, config=replace(engine.config, max_steps=4, max_asr_steps=4))
    yield
    HOLDER.engine = None


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_only_documented_statuses(case):
    case.call_and_validate(
        checks=[schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance]
    )
