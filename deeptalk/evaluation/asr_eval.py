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
    hears = engine.hears_text  # a CTC head to compare with
    sources = ("lm", "ctc") if hears else ("lm",)
    hyps: dict[str, list[str]] = {s: [] for s in sources}
    for item in tqdm(items, desc="ASR", leave=False):
        wav = load_audio(item.audio_path, engine.audio_input.sample_rate)
        for source in sources:
            events = engine.session().transcribe(wav, source=source) if hears else engine.session().transcribe(wav)
            hyps[source].append(collect(events, engine.codec.sample_rate).text)
    refs = [item.text for item in items]
    served = engine.config.asr_source if hears else "lm"
    result = {"wer": wer(refs, hyps[served]), "n": len(items), "source": served,
              "examples": [{"reference": r, **{f"{s}": hyps[s][i] for s in sources}}
                           for i, r in enumerate(refs[:8])]}
    for source in sources:  # the LM's transcript and the hearing head's own, beside the served one
        result[f"{source}_wer"] = wer(refs, hyps[source])
    log.info("ASR: WER %.3f served (%s) %s (n=%d)", result["wer"], served,
             " ".join(f"{s} {result[f'{s}_wer']:.3f}" for s in sources), len(items))
    return result
