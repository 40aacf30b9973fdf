"""Does the model listen? Held-out ASR and spoken QA at sizes that tell recipes apart (issue 19).

The evaluate step caps its sets so that ``make run`` stays short; this measures the whole held-out sets (>= 200
ASR clips, >= 100 spoken questions, in voices training never used): ASR WER of the LM's transcript and, for a
model with a CTC head, of the head's own; spoken questions answered with text (``respond(audio=…,
speak=False)``: the text of a spoken answer comes from the same decode) against the same questions typed.
``python scripts/listening_eval.py`` runs it on a trained stage.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tqdm import tqdm

from deeptalk.evaluation.asr_eval import evaluate_asr
from deeptalk.evaluation.asr_scorer import wer
from deeptalk.evaluation.engine import collect
from deeptalk.evaluation.heldout import HeldOut, load_audio
from deeptalk.evaluation.spoken_qa import qa_scores

log = logging.getLogger(__name__)


def evaluate_listening(engine: Any, held: HeldOut, n_distinct: int = 16) -> dict[str, Any]:
    """``{"asr": {...}, "spoken_qa": {...}, "seconds"}`` over every item of ``held.asr`` and ``held.spoken_qa``."""
    t0 = time.perf_counter()
    asr = evaluate_asr(engine, held.asr)
    spoken, typed = [], []
    for item in tqdm(held.spoken_qa, desc="spoken QA", leave=False):
        wav = load_audio(item.audio_path, engine.audio_input.sample_rate)
        spoken.append(collect(engine.session().respond(audio=wav, speak=False), engine.codec.sample_rate).text)
        typed.append(collect(engine.session().respond(text=item.question, speak=False), engine.codec.sample_rate).text)
    qa = qa_scores([q.references for q in held.spoken_qa], spoken, typed, n_distinct)
    qa["n"] = len(spoken)
    qa["examples"] = [{"question": q.question, "spoken": s, "typed": t, "references": list(q.references)}
                      for q, s, t in list(zip(held.spoken_qa, spoken, typed))[:8]]
    result = {"asr": asr, "spoken_qa": qa, "seconds": time.perf_counter() - t0}
    log.info("listening: ASR WER %.3f (n=%d), spoken QA %.3f vs typed %.3f (n=%d), %d distinct of %d",
             asr["wer"], asr["n"], qa["s2t_acc"], qa["typed_acc"], qa["n"], qa["distinct_answers"], qa["n_questions"])
    return result


def ctc_wer(engine: Any, items) -> float:
    """Held-out WER of the CTC head's own greedy transcripts (no decoding: an S1 model suffices)."""
    session = engine.session()
    hyps = [session.heard_text(load_audio(item.audio_path, engine.audio_input.sample_rate))
            for item in tqdm(items, desc="CTC", leave=False)]
    return wer([item.text for item in items], hyps)
