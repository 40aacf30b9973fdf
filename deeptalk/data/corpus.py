"""Build the offline corpus: samples of every task, the utterances they need, wavs, manifests, tokenizer.

Tasks (paper.md §3; ``Turn``/``Sample`` in ``schema.py``):
- ``asr``  user speaks a sentence (``speak=True``, ``audio_id``) → assistant writes the transcript. A share
  (``asr_word_fraction``) of the training sentences are random word sequences over the *whole* corpus
  vocabulary (every split's sentences and every question phrasing): a small model transcribing only templated
  fact sentences learns the templates and guesses the words, and word sequences no language model can predict
  make it listen. Words are drawn so each is heard once before any repeats: a word-level model cannot write a
  word it never heard, and with the train split's words only, 23 % of the held-out speech was such words (the
  held-out facts' subjects and answers, the held-out phrasings). A random word list states no fact, so no
  held-out fact leaks.
- ``tts``  user writes "Repeat the sentence inside the brackets without any explanation. [S]" → assistant says
  S in the assistant voice (``speak=True`` with the codec-target ``audio_id``).
- ``aqa``  spoken question → text + spoken answer (a full sentence); with ``multi_turn_prob`` one earlier
  spoken QA round (same split) comes first as context.
- ``tqa``  written question → short written answer.
- ``rqa``  question → short written answer; the user turn always has audio and ``speak`` is True with
  probability ``rqa_speech_prob`` (0.7 as in the reference); otherwise the text is the input.
- ``text`` plain knowledge text for pretraining the tiny/small backbone: every fact of *every* split as
  statements and Q/A in the *training* templates only (split ``train``). It stands for what a real LLM read
  before speech training: held-out facts are known to the base model in text, never seen in speech/QA
  fine-tuning. Split ``heldout`` of ``text`` states the held-out facts in the held-out phrasings: never trained
  on, it is the text perplexity benchmark (``deeptalk.evaluation.heldout``).

Splits and leakage (checked by ``validation.py``):
- Facts are split train / validation / held-out (``facts.split_facts``); a QA/ASR/TTS sample of split X only
  uses facts of split X, so no non-``text`` train or validation sample shares a ``fact_id`` with a held-out
  sample. ASR/TTS sentences carry the ``fact_id`` of the fact they state, or ``line:<hash>`` for poem lines.
- Held-out samples use each relation's held-out question and statement templates, which never occur in
  ``text`` or in any train/validation sample: the held-out text QA asks a known fact in an unseen phrasing.
- Held-out samples are spoken by ``heldout_speakers`` only; train/validation by ``train_speakers``; the
  assistant voice speaks every spoken answer.

Output under ``out_dir`` (= ``cfg.paths.raw``): ``utterances.parquet``, ``samples.parquet``,
``facts.parquet``, ``audio/<utt_id>.wav`` (16 kHz mono PCM16), ``tokenizer/``. Same config and seed →
byte-identical files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from deeptalk.data.audio_io import rms, sha256_bytes, write_wav
from deeptalk.data.config import DataConfig
from deeptalk.data.facts import HELDOUT_PHRASINGS, RELATIONS, Fact, load_facts, poetry_lines, split_facts
from deeptalk.data.schema import SAMPLE_COLUMNS, SPLITS, TTS_PROMPT, UTTERANCE_COLUMNS, Sample, Turn
from deeptalk.data.text_tokenizer import TextTokenizer
from deeptalk.data.voices import check_speakers, synthesize

log = logging.getLogger(__name__)

FACT_COLUMNS = {
    "id": "string",
    "relation": "string",
    "subject": "string",
    "answer": "string",
    "aliases": "string",
    "split": "string",
}


@dataclass(frozen=True)
class UtteranceRequest:
    id: str
    speaker: str
    text: str
    speed: int
    task: str
    split: str

    @property
    def audio_path(self) -> str:
        return f"audio/{self.id}.wav"


@dataclass(frozen=True)
class Sentence:
    text: str
    fact_id: str


class _Planner:
    """Draws samples deterministically (one RNG per task and split) and collects the utterances they need."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.requests: dict[str, UtteranceRequest] = {}

    def utterance(self, rng: random.Random, text: str, task: str, split: str, assistant: bool = False) -> str:
        cfg = self.cfg
        if assistant:
            speaker, speed = cfg.assistant_voice, 160
        else:
            speaker = rng.choice(cfg.heldout_speakers if split == "heldout" else cfg.train_speakers)
            speed = rng.randint(*cfg.speeds) if speaker.startswith("espeak:") else 160
        uid = "u" + hashlib.sha1(f"{speaker}|{speed}|{text}".encode()).hexdigest()[:16]
        self.requests.setdefault(uid, UtteranceRequest(uid, speaker, text, speed, task, split))
        return uid


def _cycle(rng: random.Random, items: list, n: int) -> list:
    """``n`` draws that use every item once before repeating any (reshuffled each round)."""
    out: list = []
    while items and len(out) < n:
        batch = list(items)
        rng.shuffle(batch)
        out += batch[: n - len(out)]
    return out


def sentence_pools(
    facts_by_split: dict[str, list[Fact]], seed: int, max_words: int
) -> dict[str, list[Sentence]]:
    """ASR/TTS sentences per split: fact statements (held-out template for held-out facts) and poem lines
    assigned to splits by a stable hash."""
    pools: dict[str, list[Sentence]] = {s: [] for s in SPLITS}
    for split, facts in facts_by_split.items():
        for f in facts:
            rel = RELATIONS[f.relation]
            templates = (rel.heldout_statement,) if split == "heldout" else rel.train_statements
            for t in templates:
                pools[split].append(Sentence(f.statement(t), f.id))
    for line in poetry_lines():
        h = int(hashlib.sha1(f"{seed}|{line}".encode()).hexdigest(), 16) % 100
        split = "heldout" if h < 15 else "validation" if h < 25 else "train"
        pools[split].append(Sentence(line, "line:" + hashlib.sha1(line.encode()).hexdigest()[:10]))
    return {s: [x for x in v if len(x.text.split()) <= max_words] for s, v in pools.items()}


def corpus_words(facts_by_split: dict[str, list[Fact]], sentences: dict[str, list[Sentence]]) -> list[str]:
    """Every word the corpus's speech and questions use, in every split and phrasing (lower case, sorted)."""
    texts = [s.text for pool in sentences.values() for s in pool]
    for facts in facts_by_split.values():
        for f in facts:
            rel = RELATIONS[f.relation]
            texts += [f.question(t) for t in rel.questions] + [f.statement(t) for t in rel.statements]
    return sorted({w.strip(".,;:!?\"()").lower() for t in texts for w in t.split()} - {""})


def word_sequences(rng: random.Random, words: list[str], n: int, max_words: int) -> list[Sentence]:
    """``n`` sentences of 3..``max_words`` words from ``words``, each word used once before any repeats."""
    lengths = [rng.randint(3, max(3, min(8, max_words))) for _ in range(n)]
    stream = iter(_cycle(rng, words, sum(lengths)))
    out = []
    for length in lengths:
        text = " ".join(next(stream) for _ in range(length)) + "."
        out.append(Sentence(text[0].upper() + text[1:], "words:" + hashlib.sha1(text.encode()).hexdigest()[:10]))
    return out


def plan_samples(
    cfg: DataConfig, facts_by_split: dict[str, list[Fact]], sentences: dict[str, list[Sentence]]
) -> tuple[list[Sample], list[UtteranceRequest]]:
    """All samples of all tasks and splits plus the (de-duplicated) utterances they reference."""
    planner = _Planner(cfg)
    samples: list[Sample] = []
    for task in ("asr", "tts", "aqa", "tqa", "rqa"):
        for split in SPLITS:
            n = cfg.count(task, split)
            rng = random.Random(f"{cfg.seed}|{task}|{split}")
            if task == "asr" and split == "train":
                n_words = round(n * cfg.asr_word_fraction)
                items = _cycle(rng, sentences[split], n - n_words) + word_sequences(
                    rng, corpus_words(facts_by_split, sentences), n_words, cfg.max_words
                )
            elif task in ("asr", "tts"):
                items = _cycle(rng, sentences[split], n)
            else:
                if task == "tqa" and split == "heldout" and n > len(facts_by_split[split]) * HELDOUT_PHRASINGS:
                    raise ValueError(  # round r asks every held-out fact in held-out phrasing r: no question twice
                        f"data.counts['tqa'] asks {n} held-out typed questions but there are only "
                        f"{len(facts_by_split[split])} held-out facts x {HELDOUT_PHRASINGS} held-out phrasings; "
                        "raise heldout_fraction or max_facts")
                items = _cycle(rng, facts_by_split[split], n)
            if n and not items:
                raise ValueError(f"no facts/sentences for {task}/{split}; raise max_facts or the fractions")
            for i, item in enumerate(items):
                phrasing = i // max(1, len(facts_by_split[split]))  # _cycle's round: each fact once per round
                turns, fact_id = _make_turns(task, split, item, rng, planner, facts_by_split[split], phrasing)
                samples.append(Sample(f"{task}-{split}-{i:05d}", task, split, turns, fact_id))
    samples += _text_samples(facts_by_split)
    return samples, sorted(planner.requests.values(), key=lambda r: r.id)


def _question(fact: Fact, split: str, rng: random.Random, phrasing: int = 0) -> str:
    """A training phrasing drawn at random, or held-out phrasing ``phrasing`` (0: the spoken questions' one)."""
    rel = RELATIONS[fact.relation]
    if split == "heldout":
        return fact.question(rel.heldout_questions[phrasing % len(rel.heldout_questions)])
    return fact.question(rng.choice(rel.train_questions))


def _answer_sentence(fact: Fact) -> str:
    return fact.statement(RELATIONS[fact.relation].train_statements[0])


def _make_turns(
    task: str, split: str, item, rng: random.Random, planner: _Planner, pool: list[Fact], phrasing: int = 0
) -> tuple[tuple[Turn, ...], str]:
    if task == "asr":
        uid = planner.utterance(rng, item.text, task, split)
        return (Turn("user", item.text, uid, True), Turn("assistant", item.text)), item.fact_id
    if task == "tts":
        uid = planner.utterance(rng, item.text, task, split, assistant=True)
        return (
            Turn("user", TTS_PROMPT.format(text=item.text)),
            Turn("assistant", item.text, uid, True),
        ), item.fact_id
    fact: Fact = item
    if task == "aqa":
        rounds = [fact]
        if rng.random() < planner.cfg.multi_turn_prob and len(pool) > 1:
            rounds.insert(0, rng.choice([f for f in pool if f.id != fact.id]))
        turns: list[Turn] = []
        for f in rounds:
            q, a = _question(f, split, rng), _answer_sentence(f)
            turns.append(Turn("user", q, planner.utterance(rng, q, task, split), True))
            turns.append(Turn("assistant", a, planner.utterance(rng, a, task, split, assistant=True), True))
        return tuple(turns), fact.id
    q = _question(fact, split, rng, phrasing if task == "tqa" else 0)
    if task == "tqa":
        return (Turn("user", q), Turn("assistant", fact.short_answer)), fact.id
    if task == "rqa":
        uid = planner.utterance(rng, q, task, split)
        speak = rng.random() < planner.cfg.rqa_speech_prob
        return (Turn("user", q, uid, speak), Turn("assistant", fact.short_answer)), fact.id
    raise ValueError(f"unknown task {task!r}")


def _text_samples(facts_by_split: dict[str, list[Fact]]) -> list[Sample]:
    """Knowledge text of all facts in training phrasings only (see module docstring), then the held-out facts
    stated in every held-out phrasing (split ``heldout``: the text perplexity benchmark, never trained on),
    phrasing by phrasing so that the first ``len(held-out facts)`` state each held-out fact once; within a
    phrasing the facts come in one fixed shuffled order, so any cap on them (by sample id) spans the relations."""
    facts_held = list(facts_by_split["heldout"])
    random.Random("text-heldout").shuffle(facts_held)
    held = [
        Sample(f"text-heldout-{i * len(facts_held) + j:05d}", "text", "heldout",
               (Turn("assistant", f.statement(RELATIONS[f.relation].heldout_statements[i])),), f.id)
        for i in range(HELDOUT_PHRASINGS) for j, f in enumerate(facts_held)
    ]
    out: list[Sample] = []
    facts = sorted((f for fs in facts_by_split.values() for f in fs), key=lambda f: f.id)
    for f in facts:
        rel = RELATIONS[f.relation]
        for t in rel.train_statements:
            out.append(
                Sample(
                    f"text-train-{len(out):05d}", "text", "train", (Turn("assistant", f.statement(t)),), f.id
                )
            )
        for t in rel.train_questions:
            turns = (Turn("user", f.question(t)), Turn("assistant", f.short_answer))
            out.append(Sample(f"text-train-{len(out):05d}", "text", "train", turns, f.id))
    return out + held


# ---- synthesis ------------------------------------------------------------------------------------------
def _synthesize_one(args: tuple[UtteranceRequest, str, int]) -> dict:
    req, root, sample_rate = args
    wav = synthesize(req.speaker, req.text, req.speed, sample_rate)
    data = write_wav(Path(root) / req.audio_path, wav, sample_rate)
    return {
        "id": req.id,
        "task": req.task,
        "split": req.split,
        "speaker": req.speaker,
        "text": req.text,
        "audio_path": req.audio_path,
        "sample_rate": sample_rate,
        "duration": len(wav) / sample_rate,
        "rms": round(rms(wav), 6),
        "sha256": sha256_bytes(data),
    }


def synthesize_all(
    requests: list[UtteranceRequest], root: Path, sample_rate: int, workers: int
) -> list[dict]:
    """Synthesize in ``workers`` processes; rows come back in request order (deterministic manifests)."""
    jobs = [(r, str(root), sample_rate) for r in requests]
    bar = dict(total=len(jobs), desc="synthesize", unit="utt", disable=None)
    if workers <= 1 or len(jobs) < 8:
        return [_synthesize_one(j) for j in tqdm(jobs, **bar)]
    ctx = multiprocessing.get_context("spawn")  # no inherited torch/OpenMP state in workers
    with ctx.Pool(workers) as pool:
        return list(tqdm(pool.imap(_synthesize_one, jobs, chunksize=4), **bar))


def _frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    return df.astype(columns)


def samples_frame(samples: list[Sample]) -> pd.DataFrame:
    rows = [
        {"id": s.id, "task": s.task, "split": s.split, "fact_id": s.fact_id, "turns": s.turns_json()}
        for s in samples
    ]
    return _frame(rows, SAMPLE_COLUMNS)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False, engine="pyarrow", compression="zstd")


def tokenizer_texts(samples: pd.DataFrame, utterances: pd.DataFrame) -> list[str]:
    texts = list(utterances["text"])
    for turns in samples["turns"]:
        texts += [t["text"] for t in json.loads(turns)]
    return texts


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """Build into a sibling temp dir and swap it in only when the block succeeds (no half-written corpus)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_corpus(cfg: DataConfig, out_dir: str | Path) -> dict:
    """Generate the whole corpus into ``out_dir`` (replaced atomically: built in a sibling temp dir)."""
    out_dir = Path(out_dir)
    facts = load_facts(cfg.seed, cfg.max_facts)
    by_split = split_facts(facts, cfg.seed, cfg.validation_fraction, cfg.heldout_fraction)
    samples, requests = plan_samples(cfg, by_split, sentence_pools(by_split, cfg.seed, cfg.max_words))
    check_speakers(sorted({r.speaker for r in requests}))

    with staging_dir(out_dir) as tmp:
        rows = synthesize_all(requests, tmp, cfg.sample_rate, cfg.workers)
        too_long = {r["id"] for r in rows if r["duration"] > cfg.max_utterance_seconds}
        if too_long:
            log.warning(
                "dropping %d samples whose audio exceeds %.1f s", len(too_long), cfg.max_utterance_seconds
            )
        kept = [s for s in samples if not any(t.audio_id in too_long for t in s.turns)]
        used = {t.audio_id for s in kept for t in s.turns if t.audio_id}
        for r in rows:
            if r["id"] not in used:
                (tmp / r["audio_path"]).unlink()
        utterances = _frame([r for r in rows if r["id"] in used], UTTERANCE_COLUMNS)
        samples_df = samples_frame(kept)
        fact_split = {f.id: split for split, fs in by_split.items() for f in fs}
        facts_df = _frame(
            [
                {
                    "id": f.id,
                    "relation": f.relation,
                    "subject": f.subject,
                    "answer": f.answer,
                    "aliases": json.dumps(list(f.aliases)),
                    "split": fact_split[f.id],
                }
                for f in facts
            ],
            FACT_COLUMNS,
        )
        write_parquet(utterances, tmp / "utterances.parquet")
        write_parquet(samples_df, tmp / "samples.parquet")
        write_parquet(facts_df, tmp / "facts.parquet")
        tokenizer = TextTokenizer.build(tokenizer_texts(samples_df, utterances))
        tokenizer.save(tmp / "tokenizer")
    summary = {
        "facts": len(facts),
        "utterances": len(utterances),
        "audio_seconds": round(float(utterances["duration"].sum()), 1),
        "samples": {f"{t}/{s}": int(n) for (t, s), n in samples_df.groupby(["task", "split"]).size().items()},
        "vocab_size": tokenizer.vocab_size,
        "dropped_too_long": len(too_long),
    }
    log.info("corpus: %s", summary)
    return summary
