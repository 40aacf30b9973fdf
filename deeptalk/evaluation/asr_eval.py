"""The model as a speech recogniser: corpus WER (jiwer, ``asr_scorer.wer`` normalisation) of its transcripts
of held-out spoken sentences by held-out voices, decoded through ``Session.transcribe`` (the ASR task prompt
the corpus trains: a spoken user turn answered by its transcript)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from deeptalk.evaluation.asr_scorer import wer
from deeptalk.evaluation.engine import collect
from deeptalk.evaluation.heldout import SpeechItem, load_audio

log = logging.getLogger(__name__)


def evaluate_asr(engine: Any, items: Sequence[SpeechItem]) -> dict[str, Any]:
    """``{"wer", "n", "examples"}``; an empty transcript counts as deleting every reference word."""
    if not items:
        raise ValueError("ASR evaluation needs at least one held-out spoken sentence")
    hyps = []
    for item in tqdm(items, desc="ASR", leave=False):
        wav = load_audio(item.audio_path, engine.audio_input.sample_rate)
        hyps.append(collect(engine.session().transcribe(wav), engine.codec.sample_rate).text)
    refs = [item.text for item in items]
    result = {"wer": wer(refs, hyps), "n": len(items),
              "examples": [{"reference": r, "hypothesis": h} for r, h in list(zip(refs, hyps))[:8]]}
    log.info("ASR: WER %.3f (n=%d)", result["wer"], len(items))
    return result
