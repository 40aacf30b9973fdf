"""Spoken question answering: a held-out spoken question in, the model's text and speech answer out.

One streamed answer per question (text and audio come from the same batch-parallel decode, as served):

- ``s2t_acc`` (speech → text): the answer *text* contains a reference (:mod:`deeptalk.evaluation.answers`);
- ``s2s_acc`` (speech → speech): the offline recogniser's transcript of the answer *audio* contains a
  reference; an answer without audio counts as wrong.

Text decoding is the service's (greedy with repetition penalty 1.2, restricted to text ids + EOT); audio codes
are sampled top-k with a fixed seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from deeptalk.evaluation.answers import accuracy, contains_reference
from deeptalk.evaluation.engine import collect
from deeptalk.evaluation.heldout import QAItem, load_audio

log = logging.getLogger(__name__)


def evaluate_spoken_qa(engine: Any, items: Sequence[QAItem], scorer: Any) -> dict[str, Any]:
    """``{"s2t_acc", "s2s_acc", "n", "no_audio", "examples"}`` over ``items`` (each with ``audio_path``)."""
    if not items:
        raise ValueError("spoken QA needs at least one held-out spoken question")
    s2t, s2s, examples, no_audio = [], [], [], 0
    for item in tqdm(items, desc="spoken QA", leave=False):
        if item.audio_path is None:
            raise ValueError(f"spoken QA item {item.id} has no audio")
        wav = load_audio(item.audio_path, engine.audio_input.sample_rate)
        answer = collect(engine.session().respond(audio=wav, speak=True), engine.codec.sample_rate)
        heard = scorer.transcribe(answer.pcm, answer.sample_rate) if answer.has_audio else ""
        no_audio += not answer.has_audio
        s2t.append(contains_reference(answer.text, item.references))
        s2s.append(answer.has_audio and contains_reference(heard, item.references))
        if len(examples) < 8:
            examples.append({"question": item.question, "text": answer.text, "heard": heard,
                             "references": list(item.references), "s2t": s2t[-1], "s2s": s2s[-1]})
    result = {"s2t_acc": accuracy(s2t), "s2s_acc": accuracy(s2s), "n": len(items), "no_audio": no_audio,
              "examples": examples}
    log.info("spoken QA: s→t %.3f, s→s %.3f (n=%d, %d without audio)", result["s2t_acc"], result["s2s_acc"],
             len(items), no_audio)
    return result
