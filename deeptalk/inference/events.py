"""What a session streams to its client: text deltas, audio chunks, and one final Done with timings.

Events are plain dataclasses; ``to_json`` gives the wire form shared by the NDJSON HTTP stream and the
WebSocket protocol (audio as base64 little-endian PCM, int16 or float32).
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TextDelta:
    text: str  # decoded text of the newly generated token(s), with a leading space between words

    def to_json(self, pcm_format: str = "int16") -> dict:
        return {"type": "text.delta", "text": self.text}


@dataclass(frozen=True)
class AudioChunk:
    pcm: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate

    def encode(self, pcm_format: str = "int16") -> bytes:
        """Little-endian PCM bytes in ``pcm_format`` (``int16`` or ``float32``)."""
        return encode_pcm(self.pcm, pcm_format)

    def to_json(self, pcm_format: str = "int16") -> dict:
        return {
            "type": "audio.delta",
            "audio": base64.b64encode(self.encode(pcm_format)).decode("ascii"),
            "sample_rate": self.sample_rate,
            "format": pcm_format,
            "samples": int(len(self.pcm)),
        }


@dataclass
class Timings:
    """Milliseconds from the end of the user's input (the start of ``respond``) unless named otherwise."""

    prefill_ms: float = 0.0  # prompt building + audio encoding + the prompt forward pass
    first_text_ms: float | None = None
    first_audio_ms: float | None = None  # first decoded audio chunk ready to send
    total_ms: float = 0.0
    steps: int = 0  # decode steps (one per ~85 ms codec frame)
    audio_seconds: float = 0.0  # audio produced
    rtf: float | None = None  # generation time / audio duration (None for text-only answers)


@dataclass(frozen=True)
class Done:
    text: str  # the full answer text (or transcript, for ASR)
    reason: str  # "complete" | "max_steps" | "interrupted" | "deadline" (ServiceConfig.max_answer_seconds)
    timings: Timings = field(default_factory=Timings)
    codes: Any = None  # LongTensor [K, T] of the spoken answer's codec frames (not sent over the wire)

    def to_json(self, pcm_format: str = "int16") -> dict:
        return {"type": "done", "text": self.text, "reason": self.reason, "timings": asdict(self.timings)}


Event = TextDelta | AudioChunk | Done


def encode_pcm(pcm: np.ndarray, pcm_format: str) -> bytes:
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm_format == "float32":
        return pcm.astype("<f4").tobytes()
    if pcm_format == "int16":
        return (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    raise ValueError(f"pcm_format must be 'int16' or 'float32', got {pcm_format!r}")


def decode_pcm(data: bytes, pcm_format: str) -> np.ndarray:
    """Inverse of :func:`encode_pcm` (float32 in [-1, 1]); used by clients, tests and benchmarks."""
    if pcm_format == "float32":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if pcm_format == "int16":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
    raise ValueError(f"pcm_format must be 'int16' or 'float32', got {pcm_format!r}")
