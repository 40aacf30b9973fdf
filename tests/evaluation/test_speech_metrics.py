"""Spoken QA, ASR, TTS and latency metrics on a stand-in engine with known answers (exact numbers)."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deeptalk.evaluation.asr_eval import evaluate_asr
from deeptalk.evaluation.heldout import QAItem, SpeechItem
from deeptalk.evaluation.latency import measure_latency, summarize_latency
from deeptalk.evaluation.spoken_qa import evaluate_spoken_qa
from deeptalk.evaluation.tts_eval import evaluate_tts
from deeptalk.inference.events import AudioChunk, Done, TextDelta, Timings

SR = 24000


def _speech(word: str) -> np.ndarray:
    """Stand-in audio whose 'content' the fake scorer can read back: its length encodes the word."""
    return np.full(100 * (1 + WORDS.index(word)), 0.1, np.float32)


WORDS = ["paris", "four", "london", "good", "day", "mumble"]


class FakeScorer:
    def transcribe(self, wav, sr):
        assert sr == SR
        return WORDS[len(wav) // 100 - 1] if len(wav) else ""


@dataclass
class FakeSession:
    script: dict  # input key -> (text, audio words)

    def _events(self, key):
        text, words, first_ms = self.script[key]
        yield TextDelta(text)
        for w in words:
            yield AudioChunk(_speech(w), SR)
        seconds = sum(len(_speech(w)) for w in words) / SR
        yield Done(text, "complete", Timings(prefill_ms=5.0, first_audio_ms=first_ms if words else None,
                                             total_ms=1000.0 * seconds * 0.5, audio_seconds=seconds))

    def respond(self, *, audio, speak=True):
        return self._events(round(float(audio[0]), 2))

    def transcribe(self, audio):
        return self._events(round(float(audio[0]), 2))

    def synthesize(self, text):
        return self._events(text)


@dataclass
class FakeEngine:
    script: dict
    audio_input: object = field(default_factory=lambda: type("A", (), {"sample_rate": 16000})())
    codec: object = field(default_factory=lambda: type("C", (), {"sample_rate": SR})())

    def session(self):
        return FakeSession(self.script)


def _wav(tmp_path: Path, name: str, level: float) -> Path:
    path = tmp_path / f"{name}.wav"
    sf.write(path, np.full(800, level, np.float32), 16000)
    return path


def test_spoken_qa_exact(tmp_path):
    engine = FakeEngine({
        0.1: ("The capital is Paris.", ["paris"], 300.0),  # s2t right, s2s right
        0.2: ("It is four.", ["london"], 200.0),  # s2t right, s2s wrong
        0.3: ("No idea.", [], None),  # wrong, and no audio
        0.4: ("London", ["four"], 250.0),  # s2t wrong, s2s right
    })
    items = [QAItem("a", "capital?", ("paris",), _wav(tmp_path, "a", 0.1)),
             QAItem("b", "2+2?", ("four", "4"), _wav(tmp_path, "b", 0.2)),
             QAItem("c", "capital?", ("paris",), _wav(tmp_path, "c", 0.3)),
             QAItem("d", "2+2?", ("four",), _wav(tmp_path, "d", 0.4))]
    result = evaluate_spoken_qa(engine, items, FakeScorer())
    assert result["s2t_acc"] == 0.5 and result["s2s_acc"] == 0.5
    assert result["n"] == 4 and result["no_audio"] == 1
    assert result["examples"][1] == {"question": "2+2?", "text": "It is four.", "heard": "london",
                                     "references": ["four", "4"], "s2t": True, "s2s": False}


def test_asr_wer_exact(tmp_path):
    engine = FakeEngine({0.1: ("good day", [], None), 0.2: ("", [], None)})
    items = [SpeechItem("a", "Good day!", _wav(tmp_path, "a", 0.1)),
             SpeechItem("b", "paris four", _wav(tmp_path, "b", 0.2))]
    result = evaluate_asr(engine, items)
    assert result["wer"] == pytest.approx(2 / 4)  # second transcript empty: 2 deletions of 4 words
    assert result["n"] == 2


def test_tts_wer_vs_truth_and_vs_own_text():
    engine = FakeEngine({
        "good day": ("good day", ["good"], 100.0),  # said one of two words it wrote
        "paris": ("london", ["london"], 100.0),  # wrong words, but consistent with its own text
    })
    result = evaluate_tts(engine, ["good day", "paris"], FakeScorer())
    assert result["wer_vs_truth"] == pytest.approx(2 / 3)  # 1 deletion + 1 substitution over 3 words
    assert result["wer_vs_generated_text"] == pytest.approx(1 / 3)  # only the deletion
    assert result["no_audio"] == 0


def test_latency_summary_exact():
    t = [Timings(prefill_ms=10, first_audio_ms=100, total_ms=500, audio_seconds=1.0),
         Timings(prefill_ms=30, first_audio_ms=300, total_ms=1500, audio_seconds=2.0),
         Timings(prefill_ms=20, first_audio_ms=None, total_ms=100, audio_seconds=0.0)]
    s = summarize_latency(t)
    assert s["first_audio_ms_median"] == 200.0 and s["first_audio_ms_max"] == 300
    assert s["first_audio_ms_p90"] == pytest.approx(280.0)
    assert s["rtf"] == pytest.approx(2.1 / 3.0) and s["no_audio"] == 1 and s["prefill_ms_median"] == 20
    assert summarize_latency([Timings(first_audio_ms=None)])["rtf"] is None


def test_measure_latency_skips_warmup():
    engine = FakeEngine({0.5: ("x", ["good"], 111.0), 0.6: ("y", ["day"], 222.0)})
    result = measure_latency(engine, [np.full(10, 0.5), np.full(10, 0.6)], warmup=1)
    assert result["n"] == 2 and result["first_audio_ms_median"] == pytest.approx(166.5)
