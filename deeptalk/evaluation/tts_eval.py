"""The model as a speech synthesiser (the corpus's TTS task: "Repeat the sentence inside the brackets…").

Two word error rates of the recogniser's transcript of the generated speech, reported separately:

- ``wer_vs_truth``: against the *ground-truth* sentence (what the user asked to be spoken; the gated number);
- ``wer_vs_generated_text``: against the text the model generated alongside the audio. This is what the
  reference's ``run_wer_deeptalk.py`` measures (``text_ref = text_hyp``, paper.md §4.2): text–speech
  consistency, blind to the model saying the wrong words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from deeptalk.evaluation.asr_scorer import normalize_text, wer
from deeptalk.evaluation.engine import collect

log = logging.getLogger(__name__)


def evaluate_tts(engine: Any, sentences: Sequence[str], scorer: Any) -> dict[str, Any]:
    """``{"wer_vs_truth", "wer_vs_generated_text", "n", "no_audio", "examples"}``.

    Silence (no audio) transcribes as empty: every word deleted. ``wer_vs_generated_text`` is None when the
    model generated no text words at all (there is nothing to be consistent with).
    """
    if not sentences:
        raise ValueError("TTS evaluation needs at least one held-out sentence")
    texts, heard, no_audio = [], [], 0
    for sentence in tqdm(sentences, desc="TTS", leave=False):
        answer = collect(engine.session().synthesize(sentence), engine.codec.sample_rate)
        no_audio += not answer.has_audio
        texts.append(answer.text)
        heard.append(scorer.transcribe(answer.pcm, answer.sample_rate) if answer.has_audio else "")
    consistency = None
    if any(normalize_text(t) for t in texts):
        consistency = wer(texts, heard)
    result = {
        "wer_vs_truth": wer(list(sentences), heard),
        "wer_vs_generated_text": consistency,
        "n": len(sentences),
        "no_audio": no_audio,
        "examples": [{"sentence": s, "generated_text": t, "heard": h}
                     for s, t, h in list(zip(sentences, texts, heard))[:8]],
    }
    log.info("TTS: WER vs truth %.3f, vs own text %s (n=%d)", result["wer_vs_truth"],
             "n/a" if consistency is None else f"{consistency:.3f}", len(sentences))
    return result
