"""A stand-in inference engine and recogniser with known answers, for exact metric and gate tests.

``FakeEngine(script)`` answers like ``deeptalk.inference.Engine``: ``engine.session()`` gives a session whose
``respond``/``transcribe``/``synthesize`` stream the scripted ``(text, spoken words, first_audio_ms)`` for the
input. Audio inputs are keyed by their first sample rounded to 2 decimals (tests write constant-level wavs),
text inputs by the text. ``Always(answer)`` is a script that gives the same answer to every input: a collapsed
model. Spoken words are encoded in the audio's length and read back by ``FakeScorer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from deeptalk.inference.events import AudioChunk, Done, TextDelta, Timings

SR = 24000
WORDS = ["paris", "four", "london", "good", "day", "mumble", "rome", "berlin", "madrid", "tokyo", "cairo",
         "lima", "oslo", "vienna", "dublin", "athens", "seoul", "delhi", "nairobi", "quito", "thanks"]


def speech(word: str) -> np.ndarray:
    """Stand-in audio whose 'content' the fake scorer can read back: its length encodes the word."""
    return np.full(100 * (1 + WORDS.index(word)), 0.1, np.float32)


class FakeScorer:
    def transcribe(self, wav, sr):
        assert sr == SR
        return WORDS[len(wav) // 100 - 1] if len(wav) else ""


class Always(dict):
    """A script that answers every input the same way."""

    def __init__(self, answer: tuple):
        super().__init__()
        self.answer = answer

    def __missing__(self, key):
        return self.answer


@dataclass
class FakeSession:
    script: dict  # input key -> (text, spoken words, first_audio_ms)

    def _events(self, key, speak=True):
        text, words, first_ms = self.script[key]
        words = words if speak else []
        yield TextDelta(text)
        for w in words:
            yield AudioChunk(speech(w), SR)
        seconds = sum(len(speech(w)) for w in words) / SR
        yield Done(text, "complete", Timings(prefill_ms=5.0, first_audio_ms=first_ms if words else None,
                                             total_ms=1000.0 * seconds * 0.5, audio_seconds=seconds))

    def respond(self, *, audio=None, text=None, speak=True):
        assert (audio is None) != (text is None)
        return self._events(text if audio is None else round(float(audio[0]), 2), speak)

    def transcribe(self, audio):
        return self._events(round(float(audio[0]), 2), speak=False)

    def synthesize(self, text):
        return self._events(text)


@dataclass
class FakeEngine:
    script: dict
    audio_input: object = field(default_factory=lambda: type("A", (), {"sample_rate": 16000})())
    codec: object = field(default_factory=lambda: type("C", (), {"sample_rate": SR})())
    hears_text: bool = False  # no CTC head: the LM's transcript only

    def session(self):
        return FakeSession(self.script)


def level_wav(tmp_path: Path, name: str, level: float) -> Path:
    """A constant-level 16 kHz wav: the fake session keys its answer on ``level``."""
    path = tmp_path / f"{name}.wav"
    sf.write(path, np.full(800, level, np.float32), 16000)
    return path
