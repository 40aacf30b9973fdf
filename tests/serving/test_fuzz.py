"""Schema-driven fuzzing of the HTTP API (schemathesis, in-process): requests generated from the OpenAPI
document, valid and invalid, must never get a server error, and every status must be one the document lists."""

from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# one test per operation, by label: schemathesis' own parametrize gives its items one shared node id under pytest
# 9, and pytest-xdist (make test) then runs one of them
OPERATIONS = [result.ok().label for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS)
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_server_errors_and_only_documented_statuses(operation, data):
    method, path = operation.split(" ", 1)
    case = data.draw(schema[path][method].as_strategy())
    case.call_and_validate(
        checks=[schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance]
    )


def test_every_operation_of_the_api_is_fuzzed():
    assert set(OPERATIONS) == {"POST /chat", "POST /tts", "POST /asr", "GET /voices", "GET /info"}
