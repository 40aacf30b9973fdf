"""Word timings of spoken answers: token starts from Whisper words, frames, and a real forced alignment."""

from __future__ import annotations

import numpy as np
import pytest

from deeptalk.data.alignment import WordAligner, WordTiming, token_frames, token_start_times
from deeptalk.data.text_tokenizer import TextTokenizer

TEXT = "Bern is 144 km away."
# Whisper's words of " " + TEXT: spans index TEXT (the leading space is position -1)
WORDS = [
    WordTiming(" Bern", -1, 4, 0.10, 0.40),
    WordTiming(" is", 4, 7, 0.40, 0.55),
    WordTiming(" 144", 7, 11, 0.60, 1.40),
    WordTiming(" km", 11, 14, 1.40, 1.70),
    WordTiming(" away", 14, 19, 1.70, 2.00),
    WordTiming(".", 19, 20, 2.00, 2.10),
]


def test_tokens_start_with_their_word_and_punctuation_follows_the_word_before():
    tok = TextTokenizer.build([TEXT])
    spans = tok.spans(TEXT)
    assert [TEXT[a:b].lower() for a, b in spans] == ["bern", "is", "1", "4", "4", "km", "away", "."]
    assert len(spans) == len(tok.encode(TEXT))
    starts = token_start_times(WORDS, spans, TEXT)
    assert starts.tolist() == pytest.approx([0.10, 0.40, 0.60, 0.60, 0.60, 1.40, 1.70, 1.70])


def test_start_times_never_decrease_and_text_needs_words():
    words = [WordTiming(" a", -1, 1, 0.5, 0.6), WordTiming(" b", 1, 3, 0.2, 0.3)]  # Whisper out of order
    assert token_start_times(words, [(0, 1), (2, 3)], "a b").tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="no word timings"):
        token_start_times([], [(0, 1)], "a")
    assert token_start_times([], [], "").size == 0


def test_token_frames_floor_and_clip_to_the_answer():
    fps = 46.875 / 4  # 85.3 ms coarse frames
    assert token_frames(np.array([0.0, 0.0853, 0.0854, 0.5, 9.0]), fps, 10).tolist() == [0, 0, 1, 5, 9]
    with pytest.raises(ValueError, match="at least one codec frame"):
        token_frames(np.zeros(1), fps, 0)


def test_tokenizer_spans_refuse_text_whose_case_changes_length():
    with pytest.raises(ValueError, match="lower-casing"):
        TextTokenizer.build(["a"]).spans("İstanbul")


def test_whisper_forced_alignment_times_a_synthetic_sentence():
    from deeptalk.data.voices import synthesize

    text = "The capital of France is Paris."
    wav = synthesize("piper:joe", text)
    aligner = WordAligner()
    words = aligner.words(wav, 16000, text)
    assert "".join(w.text for w in words) == " " + text
    starts = aligner.token_starts(wav, 16000, text, TextTokenizer.build([text]))
    assert len(starts) == 7 and np.all(np.diff(starts) >= 0)
    duration = len(wav) / 16000
    assert 0.0 <= starts[0] < 0.5 and starts[5] < duration  # "paris" starts inside the clip
    assert starts[5] > starts[2] + 0.3  # "paris" comes well after "of"
    assert starts[6] == starts[5]  # the full stop is not spoken: it follows "paris"
