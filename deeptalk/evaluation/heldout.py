"""The held-out benchmarks, read from the corpus manifests (``data/raw``; schemas in ``deeptalk.data.schema``).

Held-out samples ask about held-out *facts* in a held-out *phrasing* and are spoken by held-out *voices*
(``deeptalk.data.corpus``), so every number here measures generalisation, not recall of training strings.
Items are sorted by sample id and capped, so two runs (and the base vs the trained model) see the same items.
With ``speakers`` given (``heldout_for``: ``cfg.data.heldout_speakers``), spoken items in any other voice are
dropped, so a corpus that broke the rule still measures unseen voices only.

- ``text_qa``: task ``tqa`` (question as text → short answer); references = the fact's answer and aliases.
- ``spoken_qa``: tasks ``aqa`` and ``rqa`` whose last user turn is spoken; the last question is asked
  (earlier rounds of a multi-turn sample are not given: each item is one spoken question). One question per
  expected answer (the first by sample id), so distinct items ask for distinct answers and a model that hears
  gives as many distinct answers as there are items (``spoken_qa.distinct_answers``).
- ``asr``: task ``asr`` (spoken sentence → transcript).
- ``tts``: task ``tts`` sentences (the text the model must speak).
- ``sentences``: sentences stating a known fact in a held-out phrasing, for perplexity (formatted like the
  pretraining ``text`` task): the held-out ``text`` samples (every held-out fact in every held-out phrasing, in
  sample-id order), then held-out ASR/TTS sentences not among them. Sentences of other origin (poem lines) are
  out of the text LM's domain and left out; without a facts manifest (imported corpora) every sentence is kept.
  ``sentence_facts`` gives each sentence's fact id ("" if none), which the paired standard errors resample by.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from deeptalk.data.audio_io import read_wav
from deeptalk.data.schema import Sample
from deeptalk.evaluation.asr_scorer import normalize_text

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

SPLIT = "heldout"


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    references: tuple[str, ...]  # accepted answers (fact answer first, then aliases)
    audio_path: Path | None = None  # spoken question (16 kHz wav), None for text questions
    answer: str = ""  # the corpus's answer text (teacher-forced for the answer perplexity)
    fact_id: str = ""  # the fact asked about ("" if none): phrasings of one fact are resampled together


@dataclass(frozen=True)
class SpeechItem:
    id: str
    text: str  # transcript
    audio_path: Path


@dataclass(frozen=True)
class HeldOut:
    text_qa: tuple[QAItem, ...]
    spoken_qa: tuple[QAItem, ...]
    asr: tuple[SpeechItem, ...]
    tts: tuple[str, ...]
    sentences: tuple[str, ...]
    sentence_facts: tuple[str, ...] = ()  # fact id of each sentence ("" if none), aligned with ``sentences``


def _cap(items: Sequence, n: int) -> tuple:
    """The first ``n`` items (0 = all)."""
    return tuple(items if n <= 0 else items[:n])


def load_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    wav, _ = read_wav(path, sample_rate)
    return wav


def _references(fact_id: str, facts: pd.DataFrame, fallback: str) -> tuple[str, ...]:
    if fact_id and fact_id in facts.index:
        row = facts.loc[fact_id]
        aliases = json.loads(row["aliases"]) if isinstance(row["aliases"], str) else []
        refs = [str(row["answer"]), *[str(a) for a in aliases]]
        return tuple(dict.fromkeys(r for r in refs if r.strip()))
    return (fallback,)


def _one_per_answer(items: Sequence[QAItem]) -> list[QAItem]:
    """The first item for each normalised expected answer (``references[0]``)."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = normalize_text(item.references[0])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def load_heldout(
    raw_dir: str | Path,
    *,
    max_text_qa: int = 0,
    max_spoken_qa: int = 0,
    max_asr: int = 0,
    max_tts: int = 0,
    max_sentences: int = 0,
    speakers: Collection[str] | None = None,
) -> HeldOut:
    """Read the held-out split of the corpus at ``raw_dir`` (``samples.parquet``, ``utterances.parquet``,
    ``facts.parquet``); caps of 0 keep every item; ``speakers`` (None: any) are the voices spoken items may
    be in."""
    raw = Path(raw_dir)
    for name in ("samples.parquet", "utterances.parquet"):
        if not (raw / name).is_file():
            raise ValueError(f"{raw / name} is missing; run the generate_data step first")
    samples = pd.read_parquet(raw / "samples.parquet")
    samples = samples[samples["split"] == SPLIT].sort_values("id")
    utts = pd.read_parquet(raw / "utterances.parquet").set_index("id")
    facts_path = raw / "facts.parquet"
    facts = pd.read_parquet(facts_path).set_index("id") if facts_path.is_file() else pd.DataFrame()

    if speakers is not None and "speaker" not in utts.columns:
        raise ValueError(f"{raw / 'utterances.parquet'} has no speaker column to check held-out voices with")

    def audio(utt_id: str) -> Path:
        if utt_id not in utts.index:
            raise ValueError(f"utterance {utt_id!r} is referenced by a held-out sample but not in the manifest")
        return raw / str(utts.loc[utt_id, "audio_path"])

    def heldout_voice(utt_id: str) -> bool:
        return speakers is None or str(utts.loc[utt_id, "speaker"]) in speakers

    text_qa, spoken_qa, asr, tts = [], [], [], []
    stated: list[tuple[str, str]] = []  # (sentence, fact id) of held-out text samples
    spoken_sentences: list[tuple[str, str]] = []  # of in-domain held-out ASR/TTS samples
    in_domain = (lambda fact_id: fact_id in facts.index) if len(facts) else (lambda fact_id: True)
    for row in samples.itertuples(index=False):
        sample = Sample(row.id, row.task, row.split, Sample.parse_turns(row.turns), row.fact_id)
        if sample.task == "text":
            stated += [(t.text, sample.fact_id) for t in sample.turns]
            continue
        users = [t for t in sample.turns if t.role == "user"]
        answers = [t for t in sample.turns if t.role == "assistant"]
        if not users or not answers:
            continue
        question, answer = users[-1], answers[-1]
        if sample.task == "tqa":
            text_qa.append(QAItem(sample.id, question.text, _references(sample.fact_id, facts, answer.text),
                                  answer=answer.text, fact_id=sample.fact_id))
        elif sample.task in ("aqa", "rqa") and question.audio_id is not None and question.speak:
            if not heldout_voice(question.audio_id):
                continue
            spoken_qa.append(QAItem(sample.id, question.text, _references(sample.fact_id, facts, answer.text),
                                    audio(question.audio_id), answer.text, sample.fact_id))
        elif sample.task == "asr" and question.audio_id is not None:
            if not heldout_voice(question.audio_id):
                continue
            asr.append(SpeechItem(sample.id, answer.text, audio(question.audio_id)))
            if in_domain(sample.fact_id):
                spoken_sentences.append((answer.text, sample.fact_id))
        elif sample.task == "tts":
            tts.append(answer.text)
            if in_domain(sample.fact_id):
                spoken_sentences.append((answer.text, sample.fact_id))
    seen = {text for text, _ in stated}
    sentences = list(dict(stated).items()) + sorted(dict(p for p in spoken_sentences if p[0] not in seen).items())
    sentences = _cap(sentences, max_sentences)
    held = HeldOut(
        text_qa=_cap(text_qa, max_text_qa),
        spoken_qa=_cap(_one_per_answer(spoken_qa), max_spoken_qa),
        asr=_cap(asr, max_asr),
        tts=_cap(tts, max_tts),
        sentences=tuple(text for text, _ in sentences),
        sentence_facts=tuple(fact_id for _, fact_id in sentences),
    )
    log.info("held-out: %d text QA, %d spoken QA, %d ASR, %d TTS, %d sentences", len(held.text_qa),
             len(held.spoken_qa), len(held.asr), len(held.tts), len(held.sentences))
    return held


def heldout_for(cfg: ProjectConfig) -> HeldOut:
    """The held-out items of the pipeline's corpus with the profile's caps (``cfg.evaluation``)."""
    ev = cfg.evaluation
    return load_heldout(cfg.paths.raw, max_text_qa=ev.max_text_qa, max_spoken_qa=ev.max_spoken_qa,
                        max_asr=ev.max_asr, max_tts=ev.max_tts, max_sentences=ev.max_ppl_samples,
                        speakers=cfg.data.heldout_speakers)
