"""Continuous batching on the tiny random SpeechLM: answers decoded in one batch equal answers decoded alone,
and answers leave the batch at the next step when cancelled or past their deadline."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from deeptalk.data.packing import TokenizedTurn
from deeptalk.inference.events import AudioChunk, Done, TextDelta
from deeptalk.inference.generator import Decoder
from deeptalk.inference.prompt import build_prompt
from deeptalk.inference.scheduler import Scheduler

# (kind, argument): different prompt lengths, spoken and text-only answers, voices, and the tasks
REQUESTS = [
    ("audio", None),
    ("text", "what is the capital of france"),
    ("text_only", "hello, how are you today?"),
    ("tts", "two plus two is four"),
    ("audio_only", None),
    ("asr", None),
    ("text", "two plus two"),
]


def answer(engine, kind, arg, wav):
    """The events of one answer of a fresh session, and what a client would keep of them."""
    s = engine.session(voice="slt" if kind == "text" else None)
    if kind == "audio":
        events = s.respond(audio=wav)
    elif kind == "audio_only":
        events = s.respond(audio=wav[: len(wav) // 2], speak=False)
    elif kind == "text":
        events = s.respond(text=arg)
    elif kind == "text_only":
        events = s.respond(text=arg, speak=False)
    elif kind == "asr":
        events = s.transcribe(wav)
    else:
        events = s.synthesize(arg)
    return list(events)


def summary(events):
    done = events[-1]
    assert isinstance(done, Done) and done.reason in ("complete", "max_steps")
    chunks = [e.pcm for e in events if isinstance(e, AudioChunk)]
    return {
        "deltas": [e.text for e in events if isinstance(e, TextDelta)],
        "text": done.text,
        "reason": done.reason,
        "steps": done.timings.steps,
        "codes": None if done.codes is None else done.codes.tolist(),
        "pcm": np.concatenate(chunks) if chunks else np.zeros(0, np.float32),
    }


@pytest.fixture
def batched(engine):
    eng = replace(engine, scheduler=None)
    scheduler = eng.start_scheduler()
    yield eng
    scheduler.close()


def test_batched_answers_equal_answers_decoded_alone(engine, batched, user_wav):
    alone = [summary(answer(engine, kind, arg, user_wav)) for kind, arg in REQUESTS]
    assert len({a["steps"] for a in alone}) > 1  # answers leave the batch at different steps

    results: list = [None] * len(REQUESTS)
    first_event = [threading.Event() for _ in REQUESTS]

    def run(i: int) -> None:
        kind, arg = REQUESTS[i]
        s = batched.session(voice="slt" if kind == "text" else None)
        events = {
            "audio": lambda: s.respond(audio=user_wav),
            "audio_only": lambda: s.respond(audio=user_wav[: len(user_wav) // 2], speak=False),
            "text": lambda: s.respond(text=arg),
            "text_only": lambda: s.respond(text=arg, speak=False),
            "tts": lambda: s.synthesize(arg),
            "asr": lambda: s.transcribe(user_wav),
        }[kind]()
        out = []
        for e in events:
            out.append(e)
            first_event[i].set()
        results[i] = out

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(REQUESTS))]
    for i, th in enumerate(threads):  # each joins a batch that is already decoding (other cache lengths)
        th.start()
        if i < 3:
            assert first_event[i].wait(60)
    for th in threads:
        th.join(120)
    together = [summary(r) for r in results]
    for kind_arg, a, b in zip(REQUESTS, alone, together):
        assert a["deltas"] == b["deltas"] and a["text"] == b["text"], kind_arg
        assert a["codes"] == b["codes"] and a["reason"] == b["reason"] and a["steps"] == b["steps"], kind_arg
        np.testing.assert_array_equal(a["pcm"], b["pcm"])
    assert batched.scheduler.active == 0 and batched.scheduler.waiting == 0


def _prompt(engine, words):
    turn = TokenizedTurn("user", engine.check_text(words))
    return build_prompt([turn], engine.layout, {}, {}, engine.max_prompt_positions)


def _submit(scheduler, engine, words, **kw):
    decoder = Decoder(engine.layout, engine.config.sampling)
    steps = scheduler.generate(
        decoder, _prompt(engine, words), speak=True, max_steps=engine.config.max_steps,
        rng=torch.Generator().manual_seed(0), **kw,
    )
    return decoder, steps


def test_joins_one_prefill_per_step_and_a_cancel_leaves_at_the_next_step(engine):
    scheduler = Scheduler(engine.model)  # stepped by hand
    a_dec, a = _submit(scheduler, engine, "what is the capital of france")
    stop_b = threading.Event()
    b_dec, b = _submit(scheduler, engine, "hello", stop=stop_b)
    assert scheduler.waiting == 2 and scheduler.active == 0
    assert scheduler.step() == 1 and scheduler.active == 1 and scheduler.waiting == 1
    assert next(a).step == 0
    assert scheduler.step() == 2 and scheduler.active == 2
    assert next(a).step == 1 and next(b).step == 0
    stop_b.set()  # barge-in: b takes no further step
    assert scheduler.step() == 1 and scheduler.active == 1
    assert list(b) == [] and b_dec.state.reason == "interrupted" and b_dec.state.step == 0
    assert next(a).step == 2
    a.close()  # a client that stops reading also frees its row
    assert scheduler.step() == 0 and scheduler.active == 0 and a_dec.state.reason == "interrupted"


def test_deadline_ends_an_answer_before_its_next_step(engine):
    scheduler = Scheduler(engine.model)
    dec, steps = _submit(scheduler, engine, "hello", deadline=time.monotonic() + 3600)
    scheduler.step()
    assert next(steps).step == 0
    late_dec, late = _submit(scheduler, engine, "hello", deadline=time.monotonic() - 1)
    scheduler.step()
    assert list(late) == [] and late_dec.state.reason == "deadline"  # never prefilled
    assert next(steps).step == 1 and scheduler.active == 1


def test_a_bad_prompt_is_refused_before_it_queues(engine):
    scheduler = Scheduler(engine.model)
    bad = replace(_prompt(engine, "hello"), input_ids=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt ids"):
        scheduler.generate(Decoder(engine.layout, engine.config.sampling), bad, speak=True, max_steps=3)
    assert scheduler.waiting == 0


class _Flaky:
    """The model, except that its embedding fails while ``broken`` is set."""

    def __init__(self, model):
        self.model, self.broken = model, False

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def embed(self, *args, **kwargs):
        if self.broken:
            raise RuntimeError("device lost")
        return self.model.embed(*args, **kwargs)


def test_a_failed_step_fails_the_batch_answers_and_the_next_ones_are_served(engine):
    flaky = _Flaky(engine.model)
    scheduler = Scheduler(flaky)
    _, steps = _submit(scheduler, engine, "hello")
    scheduler.step()
    assert next(steps).step == 0
    flaky.broken = True
    with pytest.raises(RuntimeError, match="device lost"):
        scheduler.step()
    with pytest.raises(RuntimeError, match="device lost"):
        list(steps)
    assert scheduler.active == 0
    flaky.broken = False
    dec, again = _submit(scheduler, engine, "hello")
    while scheduler.step():
        pass
    assert len(list(again)) == dec.state.steps_taken > 0 and dec.state.reason in ("complete", "max_steps")
