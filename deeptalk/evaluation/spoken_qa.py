"""Spoken question answering: a held-out spoken question in, the model's text and speech answer out.

Per question (one ``QAItem``, in a held-out voice), two answers from fresh sessions, as served:

- the question *spoken*, answered with text and speech (``respond(audio=…, speak=True)``, the default of
  ``POST /chat``): text and audio come from the same batch-parallel decode;
- the same question *typed*, answered with text only (``respond(text=…, speak=False)``, the service's typed
  chat).

Metrics (:func:`qa_scores` is shared with the served-model check, ``service_check``):

- ``s2t_acc`` (speech → text): the spoken answer's *text* contains a reference (:mod:`.answers`);
- ``typed_acc``: the typed answer contains a reference;
- ``s2t_over_typed``: ``s2t_acc / typed_acc``, how much of what the model knows it can also answer when the
  question is heard; undefined (None, which fails its gate) when it answers no typed question;
- ``distinct_answers`` over the first ``n_questions`` questions (each has its own expected answer, see
  ``heldout``): the number of distinct normalised spoken-answer texts. A model that hears gives as many as
  there are questions; one that ignores its input gives 1;
- ``s2s_acc`` (speech → speech): the offline recogniser's transcript of the answer *audio* contains a
  reference; an answer without audio counts as wrong;
- ``speech_wer_own_text``: corpus WER of that transcript against the answer's own text (does the speech say
  what the text says; silence deletes every word); None when no answer has any text word.

Text decoding is the service's (greedy with repetition penalty 1.2, restricted to text ids + EOT); audio codes
are sampled top-k with a fixed seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from deeptalk.evaluation.answers import accuracy, contains_reference
from deeptalk.evaluation.asr_scorer import normalize_text, wer
from deeptalk.evaluation.engine import collect
from deeptalk.evaluation.heldout import QAItem, load_audio

log = logging.getLogger(__name__)


def distinct_answers(answers: Sequence[str]) -> int:
    """Number of distinct answers after ``normalize_text`` (an empty answer is one answer too)."""
    return len({normalize_text(a) for a in answers})


def qa_scores(
    references: Sequence[Sequence[str]],
    spoken: Sequence[str],
    typed: Sequence[str],
    n_distinct: int,
) -> dict[str, Any]:
    """Accuracy of the spoken and typed answers to the same questions, their ratio and the distinct count.

    ``references[i]`` are the accepted answers of question i, ``spoken[i]``/``typed[i]`` the answer texts to
    it spoken/typed. Distinct answers are counted over the first ``n_distinct`` spoken answers.
    """
    if not (len(references) == len(spoken) == len(typed)) or not references:
        raise ValueError(f"need as many spoken and typed answers as questions (≥ 1), got "
                         f"{len(references)}/{len(spoken)}/{len(typed)}")
    s2t = accuracy([contains_reference(a, refs) for a, refs in zip(spoken, references)])
    typed_acc = accuracy([contains_reference(a, refs) for a, refs in zip(typed, references)])
    first = spoken[:n_distinct]
    return {
        "s2t_acc": s2t,
        "typed_acc": typed_acc,
        "s2t_over_typed": s2t / typed_acc if typed_acc > 0 else None,
        "distinct_answers": distinct_answers(first),
        "n_questions": len(first),
    }


def evaluate_spoken_qa(
    engine: Any, items: Sequence[QAItem], scorer: Any, n_distinct: int = 16
) -> dict[str, Any]:
    """``{"s2t_acc", "typed_acc", "s2t_over_typed", "distinct_answers", "n_questions", "s2s_acc",
    "speech_wer_own_text", "n", "no_audio", "examples"}`` over ``items`` (each with ``audio_path``)."""
    if not items:
        raise ValueError("spoken QA needs at least one held-out spoken question")
    spoken, typed, heard_all, s2s, examples, no_audio = [], [], [], [], [], 0
    for item in tqdm(items, desc="spoken QA", leave=False):
        if item.audio_path is None:
            raise ValueError(f"spoken QA item {item.id} has no audio")
        wav = load_audio(item.audio_path, engine.audio_input.sample_rate)
        answer = collect(engine.session().respond(audio=wav, speak=True), engine.codec.sample_rate)
        typed.append(collect(engine.session().respond(text=item.question, speak=False),
                             engine.codec.sample_rate).text)
        heard = scorer.transcribe(answer.pcm, answer.sample_rate) if answer.has_audio else ""
        no_audio += not answer.has_audio
        spoken.append(answer.text)
        heard_all.append(heard)
        s2s.append(answer.has_audio and contains_reference(heard, item.references))
        if len(examples) < 8:
            examples.append({"question": item.question, "text": answer.text, "typed_text": typed[-1],
                             "heard": heard, "references": list(item.references),
                             "s2t": contains_reference(answer.text, item.references),
                             "typed": contains_reference(typed[-1], item.references), "s2s": s2s[-1]})
    result = qa_scores([item.references for item in items], spoken, typed, n_distinct)
    own_text = wer(spoken, heard_all) if any(normalize_text(t) for t in spoken) else None
    result.update({"s2s_acc": accuracy(s2s), "speech_wer_own_text": own_text, "n": len(items),
                   "no_audio": no_audio, "examples": examples})
    log.info("spoken QA: s→t %.3f, typed %.3f, s→s %.3f, %d distinct answers of %d, speech WER vs own "
             "text %s (n=%d, %d without audio)", result["s2t_acc"], result["typed_acc"], result["s2s_acc"],
             result["distinct_answers"], result["n_questions"],
             "n/a" if own_text is None else f"{own_text:.3f}", len(items), no_audio)
    return result
