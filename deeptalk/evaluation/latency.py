"""Latency through the service's streaming path (``Engine`` → ``Session.respond``, chunked codec decode).

- ``first_audio_ms``: from the call to ``respond`` with the complete user utterance (the end of the user's
  input) to the first decoded audio chunk ready to send (``Timings.first_audio_ms``). It includes feature
  extraction, prefill, the K+1 decode steps the delay pattern needs before a frame is complete, and the
  codec's look-ahead (paper.md §4.4).
- ``rtf``: total generation wall time / seconds of audio produced, pooled over answers (< 1 keeps up with
  playback).

Numbers are wall-clock on the machine the step runs on and depend on its load; warm-up runs are not timed.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from deeptalk.evaluation.engine import collect
from deeptalk.inference.events import Timings

log = logging.getLogger(__name__)


def summarize_latency(timings: Sequence[Timings]) -> dict[str, Any]:
    """Median / p90 / max first-audio latency over answers that produced audio, and the pooled RTF."""
    if not timings:
        raise ValueError("latency summary over zero answers")
    first = sorted(t.first_audio_ms for t in timings if t.first_audio_ms is not None)
    audio_s = sum(t.audio_seconds for t in timings)
    out: dict[str, Any] = {"n": len(timings), "no_audio": len(timings) - len(first)}
    if first:
        out["first_audio_ms_median"] = statistics.median(first)
        out["first_audio_ms_p90"] = float(np.percentile(first, 90))
        out["first_audio_ms_max"] = first[-1]
    else:
        out["first_audio_ms_median"] = out["first_audio_ms_p90"] = out["first_audio_ms_max"] = None
    out["prefill_ms_median"] = statistics.median(t.prefill_ms for t in timings)
    out["rtf"] = sum(t.total_ms for t in timings) / 1000.0 / audio_s if audio_s > 0 else None
    out["audio_seconds"] = audio_s
    return out


def measure_latency(engine: Any, clips: Sequence[np.ndarray], warmup: int = 1) -> dict[str, Any]:
    """Answer each 16 kHz clip with speech through a fresh session; the first ``warmup`` answers are untimed."""
    if not clips:
        raise ValueError("latency needs at least one spoken question")
    for wav in list(clips)[:warmup]:
        collect(engine.session().respond(audio=wav, speak=True), engine.codec.sample_rate)
    timings = [collect(engine.session().respond(audio=wav, speak=True), engine.codec.sample_rate).timings
               for wav in tqdm(clips, desc="latency", leave=False)]
    result = summarize_latency(timings)
    log.info("latency: first audio median %s ms, RTF %s", result["first_audio_ms_median"], result["rtf"])
    return result
