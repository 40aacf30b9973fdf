"""Corpus generation: determinism, task structure, and the split rules that make evaluation honest."""

import hashlib
import json
import random

import pandas as pd
import pytest

from deeptalk.data.audio_io import read_wav, sha256_file
from deeptalk.data.corpus import TTS_PROMPT, word_sequences
from deeptalk.data.facts import RELATIONS
from deeptalk.data.schema import SAMPLE_COLUMNS, UTTERANCE_COLUMNS, Sample
from deeptalk.data.text_tokenizer import load_tokenizer
from tests.data._corpus import SMALL_COUNTS, small_config, small_corpus


@pytest.fixture(scope="module")
def corpus():
    root = small_corpus(0)
    utts = pd.read_parquet(root / "utterances.parquet")
    samples = pd.read_parquet(root / "samples.parquet")
    facts = pd.read_parquet(root / "facts.parquet")
    return root, utts, samples, facts


def _tree_digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_same_seed_gives_byte_identical_corpus(tmp_path):
    from deeptalk.data.corpus import build_corpus

    build_corpus(small_config(0), tmp_path / "again")
    assert _tree_digest(tmp_path / "again") == _tree_digest(small_corpus(0))


def test_different_seed_gives_a_different_corpus(tmp_path):
    from deeptalk.data.corpus import build_corpus

    cfg = small_config(1, counts={"asr": (3, 0, 1)}, max_facts=40)
    build_corpus(cfg, tmp_path / "s1")
    other = pd.read_parquet(tmp_path / "s1" / "samples.parquet")
    ours = pd.read_parquet(small_corpus(0) / "samples.parquet")
    assert set(other.loc[other.task == "asr", "turns"]) != set(ours.loc[ours.task == "asr", "turns"])


def test_manifests_follow_the_schema_and_counts(corpus):
    root, utts, samples, _ = corpus
    assert list(utts.columns) == list(UTTERANCE_COLUMNS)
    assert list(samples.columns) == list(SAMPLE_COLUMNS)
    counts = samples[samples.task != "text"].groupby(["task", "split"]).size()
    for task, (train, val, held) in SMALL_COUNTS.items():
        assert (counts[(task, "train")], counts[(task, "validation")], counts[(task, "heldout")]) == (
            train,
            val,
            held,
        )
    assert utts.id.is_unique and samples.id.is_unique
    for row in utts.itertuples():
        wav, sr = read_wav(root / row.audio_path)
        assert sr == row.sample_rate == 16000
        assert abs(len(wav) / sr - row.duration) < 1e-6 and 0 < row.duration <= 8.0
        assert sha256_file(root / row.audio_path) == row.sha256
    assert {p.name for p in (root / "audio").iterdir()} == {f"{i}.wav" for i in utts.id}


def test_task_structure(corpus):
    _, utts, samples, _ = corpus
    cfg = small_config(0)
    speaker = dict(zip(utts.id, utts.speaker, strict=False))
    for row in samples.itertuples():
        turns = Sample.parse_turns(row.turns)
        user, answer = turns[-2] if len(turns) > 1 else None, turns[-1]
        if row.task == "asr":
            assert user.speak and user.audio_id and answer.text == user.text and not answer.speak
        elif row.task == "tts":
            assert user.audio_id is None and user.text == TTS_PROMPT.format(text=answer.text)
            assert answer.speak and speaker[answer.audio_id] == cfg.assistant_voice
        elif row.task == "aqa":
            assert len(turns) in (2, 4)
            for u, a in zip(turns[::2], turns[1::2], strict=False):
                assert u.speak and u.audio_id and speaker[u.audio_id] != cfg.assistant_voice
                assert a.speak and speaker[a.audio_id] == cfg.assistant_voice
        elif row.task == "tqa":
            assert all(t.audio_id is None for t in turns)
        elif row.task == "rqa":
            assert user.audio_id and not answer.speak
        elif row.task == "text":  # pretraining text (train) or the held-out perplexity sentences
            assert all(t.audio_id is None for t in turns) and row.split in ("train", "heldout")
            if row.split == "heldout":
                assert [t.role for t in turns] == ["assistant"]


def test_no_heldout_fact_in_training_speech_or_qa(corpus):
    _, _, samples, facts = corpus
    qa = samples[samples.task != "text"]
    heldout = set(qa.loc[qa.split == "heldout", "fact_id"]) - {""}
    trained = set(qa.loc[qa.split != "heldout", "fact_id"])
    assert heldout and not heldout & trained
    fact_split = dict(zip(facts.id, facts.split, strict=False))
    for row in qa.itertuples():  # every QA turn (context rounds too) uses facts of its own split
        if row.fact_id in fact_split:
            assert fact_split[row.fact_id] == row.split


def test_text_task_covers_all_facts_in_training_phrasings_only(corpus):
    _, _, samples, facts = corpus
    text = samples[(samples.task == "text") & (samples.split == "train")]
    assert set(text.fact_id) == set(facts.id)  # the backbone knows every fact, held-out ones included
    text_turns = {t["text"] for turns in text.turns for t in json.loads(turns)}
    heldout = samples[samples.split == "heldout"]
    heldout_text = {t["text"] for turns in heldout[heldout.task == "text"].turns for t in json.loads(turns)}
    assert heldout_text and not heldout_text & text_turns  # perplexity sentences are never trained on
    for turns in heldout.turns:
        for t in json.loads(turns):
            if t["role"] == "user":
                assert t["text"] not in text_turns
    # and the held-out question template itself never appears in text
    for row in facts.itertuples():
        rel = RELATIONS[row.relation]
        held_q = rel.heldout_question.format(s=row.subject, a=row.answer)
        assert held_q[0].upper() + held_q[1:] not in text_turns


def test_heldout_speakers_only_speak_heldout_samples(corpus):
    _, utts, _, _ = corpus
    cfg = small_config(0)
    train_side = utts[utts.split != "heldout"]
    assert not set(train_side.speaker) & set(cfg.heldout_speakers)
    held_users = utts[(utts.split == "heldout") & (utts.speaker != cfg.assistant_voice)]
    assert set(held_users.speaker) <= set(cfg.heldout_speakers)


def test_tokenizer_covers_the_corpus(corpus):
    root, utts, samples, _ = corpus
    tok = load_tokenizer(root / "tokenizer")
    texts = list(utts.text) + [t["text"] for turns in samples.turns for t in json.loads(turns)]
    assert all(tok.unk_id not in tok.encode(t) for t in texts)


def test_generate_data_step_writes_the_corpus_and_checks_the_encoder_limit(tmp_path):
    import dataclasses
    from types import SimpleNamespace

    from deeptalk.audio_input import AudioInputConfig
    from deeptalk.config import Paths
    from deeptalk.steps import generate_data

    cfg = SimpleNamespace(
        data=small_config(0, counts={"asr": (2, 1, 1)}, max_facts=40),
        paths=Paths(tmp_path),
        audio_input=AudioInputConfig(),
        seed=0,
    )
    summary = generate_data.run(cfg)
    assert summary["samples"]["asr/train"] == 2 and summary["utterances"] == 4
    assert {p.name for p in cfg.paths.raw.iterdir()} == {
        "audio",
        "facts.parquet",
        "samples.parquet",
        "tokenizer",
        "utterances.parquet",
    }
    cfg.audio_input = dataclasses.replace(AudioInputConfig(), max_seconds=4.0)
    with pytest.raises(ValueError, match="exceeds the audio encoder"):
        generate_data.run(cfg)


def test_data_config_rejects_bad_settings():
    from deeptalk.data.config import DataConfig

    with pytest.raises(ValueError, match="unknown task"):
        DataConfig(counts={"asr": (1, 1, 1), "chat": (1, 1, 1)})
    with pytest.raises(ValueError, match="held-out speakers must not speak in training"):
        DataConfig(train_speakers=("flite:rms",), heldout_speakers=("flite:rms",))
    with pytest.raises(ValueError, match="3 non-negative ints"):
        DataConfig(counts={"asr": (1, 1)})
    assert DataConfig.for_profile("small").count("aqa", "train") > DataConfig.for_profile("tiny").count(
        "aqa", "train"
    )
    assert DataConfig.for_profile("paper").import_source


def test_a_share_of_training_asr_is_random_word_sequences():
    """Word sequences force listening: their words come from the corpus, their order from no template."""
    from deeptalk.data.corpus import corpus_words, plan_samples, sentence_pools
    from deeptalk.data.facts import load_facts, split_facts

    cfg = small_config(0, counts={**SMALL_COUNTS, "asr": (10, 2, 2)}, asr_word_fraction=0.4)
    by_split = split_facts(load_facts(cfg.seed, cfg.max_facts), cfg.seed, cfg.validation_fraction, cfg.heldout_fraction)
    pools = sentence_pools(by_split, cfg.seed, cfg.max_words)
    samples, _ = plan_samples(cfg, by_split, pools)
    asr = [s for s in samples if s.task == "asr"]
    words = [s for s in asr if s.fact_id.startswith("words:")]
    assert len(words) == 4 and all(s.split == "train" for s in words)  # evaluation keeps natural sentences
    vocabulary = set(corpus_words(by_split, pools))
    for s in words:
        text = s.turns[0].text.rstrip(".").lower().split()
        assert 3 <= len(text) <= 8 and set(text) <= vocabulary and s.turns[1].text == s.turns[0].text


def test_word_sequences_cover_the_held_out_vocabulary():
    """Training speech covers every word of held-out speech (a word-level model cannot write a word it never
    heard) without stating a held-out fact: each word is drawn once before any repeats."""
    from deeptalk.data.corpus import corpus_words, plan_samples, sentence_pools
    from deeptalk.data.facts import load_facts, split_facts

    cfg = small_config(0)
    by_split = split_facts(load_facts(cfg.seed, cfg.max_facts), cfg.seed, cfg.validation_fraction, cfg.heldout_fraction)
    pools = sentence_pools(by_split, cfg.seed, cfg.max_words)
    vocabulary = corpus_words(by_split, pools)
    sequences = word_sequences(random.Random(0), vocabulary, n=len(vocabulary), max_words=8)
    heard = [w for s in sequences for w in s.text.rstrip(".").lower().split()]
    assert set(heard) == set(vocabulary)  # n = |V| sentences of >= 3 words: every word at least once
    assert max(heard.count(w) for w in vocabulary) - min(heard.count(w) for w in vocabulary) <= 1
    samples, _ = plan_samples(cfg, by_split, pools)
    heldout_speech = {w.strip(".,;:!?").lower() for s in samples if s.split == "heldout"
                      for t in s.turns if t.role == "user" and t.audio_id for w in t.text.split()}
    assert heldout_speech <= set(vocabulary)
