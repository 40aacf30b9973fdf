import threading

import numpy as np
import pytest

from deeptalk.data.packing import TokenizedTurn
from deeptalk.inference.engine import UnknownVoice, UnknownWords
from deeptalk.inference.events import AudioChunk, Done, TextDelta
from deeptalk.inference.prompt import build_prompt


def collect(events):
    events = list(events)
    assert isinstance(events[-1], Done) and not any(isinstance(e, Done) for e in events[:-1])
    return events, events[-1]


def pcm(events):
    chunks = [e.pcm for e in events if isinstance(e, AudioChunk)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def test_streamed_audio_equals_offline_decode_of_the_same_codes(engine, user_wav):
    events, done = collect(engine.session().respond(audio=user_wav))
    assert done.codes is not None and done.codes.shape[0] == engine.codec.n_streams
    assert done.codes.shape[1] > 0, "the random model should produce some frames within max_steps"
    streamed = pcm(events)
    offline = engine.codec.decode(done.codes)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    assert sum(isinstance(e, AudioChunk) for e in events) > 1, "audio must arrive in several chunks"
    assert {e.sample_rate for e in events if isinstance(e, AudioChunk)} == {engine.codec.sample_rate}
    t = done.timings
    assert (
        0 < t.first_audio_ms <= t.total_ms
        and t.rtf > 0
        and t.audio_seconds == pytest.approx(len(streamed) / engine.codec.sample_rate)
    )


def test_text_deltas_concatenate_to_the_answer(engine):
    events, done = collect(engine.session().respond(text="what is the capital of france", speak=False))
    assert not any(isinstance(e, AudioChunk) for e in events) and done.codes is None
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() == done.text
    assert done.reason in ("complete", "max_steps") and done.timings.rtf is None


def test_multi_turn_history_grows_and_feeds_the_next_prompt(engine, user_wav):
    s = engine.session()
    collect(s.respond(text="hello", speak=False))
    collect(s.respond(audio=user_wav, speak=False))
    roles = [t.role for t in s.state.turns]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert s.state.turns[2].audio_id in s.state.frames  # spoken turns keep their features for later prompts
    nxt = build_prompt(
        [*s.state.turns, TokenizedTurn("user", (5,))],
        engine.layout,
        s.state.frames,
        s.state.n_positions,
        engine.max_prompt_positions,
    )
    text = nxt.input_ids[:, engine.layout.text_stream]
    assert int((text == engine.layout.text_special("ASSISTANT")).sum()) == 3
    assert nxt.audio is not None and nxt.audio.frames.shape[0] == 1
    s.reset()
    assert s.state.turns == [] and s.state.frames == {}


def test_history_is_trimmed_to_the_configured_turns(engine):
    s = engine.session()
    for _ in range(engine.config.max_history_turns):
        collect(s.respond(text="hello", speak=False))
    assert len(s.state.turns) <= engine.config.max_history_turns
    assert s.state.turns[0].role == "user"


def test_interrupt_stops_within_a_step_and_session_stays_usable(greedy_engine, user_wav):
    s = greedy_engine.session()
    seen = []
    for event in s.respond(audio=user_wav):
        seen.append(event)
        if isinstance(event, TextDelta) or isinstance(event, AudioChunk):
            steps_at_interrupt = s._decoder.state.step
            s.interrupt()
    done = seen[-1]
    assert isinstance(done, Done) and done.reason == "interrupted"
    assert s._decoder.state.step == steps_at_interrupt  # no decode step after the barge-in
    assert [t.role for t in s.state.turns] == ["user", "assistant"]
    _, again = collect(s.respond(text="hello"))
    assert again.reason in ("complete", "max_steps")


def test_interrupt_before_the_first_event_is_not_lost(engine):
    s = engine.session()
    events = s.respond(text="hello")
    s.interrupt()  # e.g. a cancel that arrives while the server is still waiting for a slot
    done = list(events)[-1]
    assert done.reason == "interrupted" and done.timings.steps == 0 and done.text == ""
    _, again = collect(s.respond(text="hello"))  # the next answer is not affected
    assert again.reason in ("complete", "max_steps") and again.timings.steps > 0


def test_interrupt_from_another_thread(engine, user_wav):
    """Barge-in from another thread stops a spoken answer at its next decode step: the answer is paused at its
    first event while the interrupt arrives, then ends ``interrupted`` well before the same answer uninterrupted."""
    s = engine.session()
    first, resume = threading.Event(), threading.Event()
    out: list = []

    def consume():
        for e in s.respond(audio=user_wav):
            out.append(e)
            if len(out) == 1:
                first.set()
                resume.wait(30)  # the generator is suspended here while the other thread interrupts

    th = threading.Thread(target=consume)
    th.start()
    assert first.wait(60), "no first event"
    s.interrupt()
    resume.set()
    th.join(60)
    assert not th.is_alive() and isinstance(out[-1], Done) and out[-1].reason == "interrupted"
    _, full = collect(engine.session().respond(audio=user_wav))  # the same answer (seeded sampling), not stopped
    assert full.reason in ("complete", "max_steps") and out[-1].timings.steps < full.timings.steps
    _, again = collect(s.respond(text="hello"))  # the interrupted session still answers
    assert again.reason in ("complete", "max_steps")


def test_voices_and_bad_input(engine, user_wav):
    assert engine.voices == ("joe", "slt")
    assert engine.default_voice == "joe" and engine.session().voice == "joe"  # trained voice token, not ANS_A
    with pytest.raises(UnknownVoice, match="unknown voice 'nobody'"):
        engine.session(voice="nobody")
    s = engine.session(voice="slt")
    _, done = collect(s.respond(text="hello", voice="joe"))
    with pytest.raises(UnknownVoice):
        list(s.respond(text="hello", voice="bob"))
    with pytest.raises(ValueError, match="exactly one"):
        list(s.respond())
    with pytest.raises(ValueError, match="empty"):
        list(s.respond(text="   "))
    with pytest.raises(ValueError, match="limit"):
        list(s.respond(text="a" * (engine.config.max_text_chars + 1)))
    with pytest.raises(UnknownWords, match="'zebra'"):
        list(s.respond(text="hello zebra"))
    with pytest.raises(ValueError, match="limit"):
        list(s.respond(audio=np.zeros(int(16000 * (engine.config.max_upload_seconds + 1)), np.float32)))
    assert s.state.turns[:2] and len(s.state.turns) == 2  # failed requests leave no trace in the history


def test_asr_and_tts_modes(engine, user_wav):
    s = engine.session()
    events, done = collect(s.transcribe(user_wav))
    assert (
        done.codes is None
        and len(done.timings.__dict__)
        and done.timings.steps <= engine.config.max_asr_steps
    )
    events, done = collect(s.synthesize("two plus two is four", voice="joe"))
    assert done.codes is not None
    assert s.state.turns == []  # one-shot tasks do not touch the conversation


def test_concurrent_sessions_give_the_same_answers_as_sequential_ones(greedy_engine, user_wav):
    """Sessions share only read-only weights: answers generated in parallel threads equal sequential ones."""
    inputs = [{"audio": user_wav}, {"text": "hello"}, {"text": "two plus two is four"}]

    def answer(kw):
        done = list(greedy_engine.session().respond(**kw))[-1]
        return done.text, done.codes.tolist()

    sequential = [answer(kw) for kw in inputs]
    results: list = [None] * len(inputs)

    def worker(i):
        results[i] = answer(inputs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == sequential


def test_warmup_runs_the_audio_path_and_leaves_no_state(engine, user_wav, monkeypatch):
    """Warm-up answers spoken input until the first audio chunk (encoder, prefill, decode steps, codec decoder),
    stops there, and leaves nothing behind: the next answer is the one a fresh engine gives."""
    before = collect(engine.session().respond(audio=user_wav))[1]
    seen: list = []
    asked: list = []
    make_session = engine.session

    def spying_session(*args, **kwargs):
        session = make_session(*args, **kwargs)
        respond = session.respond

        def recorded(*a, **kw):
            asked.append(kw)
            for event in respond(*a, **kw):
                seen.append(event)
                yield event

        session.respond = recorded
        return session

    monkeypatch.setattr(engine, "session", spying_session)
    assert engine.warmup(rounds=2) > 0
    monkeypatch.undo()
    assert len(asked) == 2 and all(kw.get("audio") is not None for kw in asked), "spoken input each round"
    assert [e.reason for e in seen if isinstance(e, Done)] == ["interrupted", "interrupted"]
    assert sum(isinstance(e, AudioChunk) for e in seen) == 2, "each round stops at its first audio chunk"
    after = collect(engine.session().respond(audio=user_wav))[1]
    assert after.text == before.text and after.reason == before.reason
    np.testing.assert_array_equal(after.codes, before.codes)
