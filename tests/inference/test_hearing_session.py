"""Sessions of a model that hears text (audio_input.interface ctc_tokens / pseudo_text): what the CTC head hears
is what the service transcribes and what the LM reads; hearing nothing gets an answer that says so."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from deeptalk.evaluation.engine import collect
from deeptalk.inference.engine import MODEL_DIR, Engine
from deeptalk.inference.events import Done, TextDelta
from deeptalk.inference.session import NOTHING_HEARD

from .conftest import AUDIO, SERVICE, build_package


def package_with_head(root, interface: str, bias: dict[str, float]) -> Engine:
    """A tiny package whose CTC head's output bias is set per unit ("blank" or a word), so it hears on cue."""
    build_package(root, audio=replace(AUDIO, interface=interface))
    engine = Engine.load(root, SERVICE)
    head_file = root / MODEL_DIR / "projector.safetensors"
    state = load_file(str(head_file))
    state["out.weight"] = state["out.weight"] * 0.01
    vocab = engine.tokenizer.vocab
    for unit, value in bias.items():
        index = engine.model.projector.blank if unit == "blank" else vocab.index(unit)
        state["out.bias"][index] = value
    save_file(state, str(head_file))
    return Engine.load(root, SERVICE)


@pytest.fixture(scope="module")
def deaf(tmp_path_factory) -> Engine:
    return package_with_head(tmp_path_factory.mktemp("deaf"), "ctc_tokens", {"blank": 50.0})


@pytest.fixture(scope="module")
def hearing(tmp_path_factory) -> Engine:
    return package_with_head(tmp_path_factory.mktemp("hears"), "pseudo_text", {"paris": 20.0})


def test_hearing_nothing_gives_an_empty_transcript_and_says_nothing_was_heard(deaf, user_wav):
    session = deaf.session()
    assert collect(session.transcribe(user_wav), deaf.codec.sample_rate).text == ""
    events = list(session.respond(audio=user_wav, speak=True))
    assert [e.text for e in events if isinstance(e, TextDelta)] == [NOTHING_HEARD]
    assert isinstance(events[-1], Done) and events[-1].text == NOTHING_HEARD
    assert session.state.turns == []  # nothing heard, nothing remembered
    silence = np.zeros(16000, dtype=np.float32)
    assert collect(session.respond(audio=silence, speak=False), deaf.codec.sample_rate).text == NOTHING_HEARD


def test_served_ctc_transcript_equals_offline_decoding(hearing, user_wav):
    """/asr with the CTC source is the head's greedy transcript of the frames the encode step would store."""
    frames, positions = hearing.encode_audio(user_wav)
    offline = hearing.tokenizer.decode(hearing.model.transcribe_heard(frames))
    assert offline == "paris" and positions == 1  # one run of the same unit collapses to one heard word
    served = collect(hearing.session().transcribe(user_wav, source="ctc"), hearing.codec.sample_rate).text
    assert served == offline


def test_the_lm_reads_the_heard_words_in_the_prompt(hearing, user_wav):
    """The spoken turn occupies one position per heard unit, and an answer is generated from it."""
    session = hearing.session()
    events = list(session.respond(audio=user_wav, speak=False))
    assert isinstance(events[-1], Done) and events[-1].reason in ("complete", "max_steps")
    assert session.state.n_positions["u0"] == 1


def test_a_deaf_model_fails_the_listening_gates(deaf, tmp_path):
    """Measured, not assumed: a model that hears nothing in held-out speech (its CTC head only emits blank) gives
    every spoken question the same answer and empty transcripts, which the tiny profile's gates refuse."""
    from deeptalk.evaluation.config import GateThresholds
    from deeptalk.evaluation.gates import check_gates
    from deeptalk.evaluation.heldout import HeldOut, QAItem, SpeechItem
    from deeptalk.evaluation.listening import evaluate_listening

    from .conftest import SENTENCES, espeak

    wavs = [espeak(s, tmp_path / f"s{i}.wav", voice=v) for i, (s, v) in enumerate(zip(SENTENCES, ["en-us", "en-gb", "en-us+f3"]))]
    held = HeldOut(
        text_qa=(),
        spoken_qa=tuple(QAItem(f"q{i}", s, (s.split()[-1],), audio_path=w) for i, (s, w) in enumerate(zip(SENTENCES, wavs))),
        asr=tuple(SpeechItem(f"a{i}", s, w) for i, (s, w) in enumerate(zip(SENTENCES, wavs))),
        tts=(), sentences=(),
    )
    result = evaluate_listening(deaf, held, n_distinct=len(SENTENCES))
    assert result["asr"]["wer"] == 1.0 and result["spoken_qa"]["distinct_answers"] == 1
    metrics = {"asr": result["asr"], "spoken_qa": result["spoken_qa"]}
    verdict = check_gates(metrics, GateThresholds.for_profile("tiny"), only=["max_asr_wer", "min_distinct_answers"])
    assert not verdict.passed
    assert {f.metric for f in verdict.failures} == {"asr.wer", "spoken_qa.distinct_answers"}


def test_realtime_streams_what_is_heard_while_the_user_speaks(hearing, user_wav, monkeypatch):
    """The WebSocket sends partial transcripts as audio arrives and the final one on commit, equal to /asr's."""
    import base64

    from starlette.testclient import TestClient

    from deeptalk.serving.app import create_app
    from deeptalk.serving.capacity import EngineHolder

    monkeypatch.setenv("DEEPTALK_API_KEY", "k")
    pcm = (np.clip(user_wav, -1, 1) * 32767).astype("<i2").tobytes()
    with TestClient(create_app(EngineHolder(hearing), static_dir="static")) as client:
        with client.websocket_connect("/realtime?api_key=k") as ws:
            assert ws.receive_json()["type"] == "session.created"
            def append(chunk: bytes) -> None:
                ws.send_json({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})

            append(pcm[:8000])
            append(pcm[8000:16000])  # 0.5 s in: the user is still speaking, and a partial transcript arrives
            partial = ws.receive_json()
            assert partial["type"] == "conversation.item.input_audio_transcription.delta"
            assert partial["transcript"] == "paris" and partial["delta"] == "paris"
            for i in range(16000, len(pcm), 8000):
                append(pcm[i : i + 8000])
            ws.send_json({"type": "input_audio_buffer.commit"})
            events = []
            while not events or events[-1]["type"] != "conversation.item.input_audio_transcription.completed":
                events.append(ws.receive_json())
    assert "input_audio_buffer.committed" in [e["type"] for e in events]
    assert events[-1]["transcript"] == "paris"
    assert events[-1]["transcript"] == collect(hearing.session().transcribe(user_wav, source="ctc"),
                                               hearing.codec.sample_rate).text
