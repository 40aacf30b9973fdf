import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from deeptalk.evaluation.heldout import load_audio, load_heldout


def _turns(*turns):
    return json.dumps([{"role": r, "text": t, "audio_id": a, "speak": s} for r, t, a, s in turns])


@pytest.fixture
def raw(tmp_path):
    (tmp_path / "audio").mkdir()
    for utt in ("u1", "u2", "u3"):
        sf.write(tmp_path / "audio" / f"{utt}.wav", np.zeros(1600, np.float32) + 0.1, 16000)
    pd.DataFrame({"id": ["u1", "u2", "u3"], "audio_path": ["audio/u1.wav", "audio/u2.wav", "audio/u3.wav"]}
                 ).to_parquet(tmp_path / "utterances.parquet")
    pd.DataFrame({"id": ["cap:france", "num:4"], "answer": ["paris", "four"], "aliases": ['["paris"]', '["4"]']}
                 ).to_parquet(tmp_path / "facts.parquet")
    rows = [
        ("tqa-heldout-1", "tqa", "heldout", "cap:france", _turns(("user", "Capital of France?", None, False),
                                                                 ("assistant", "Paris.", None, False))),
        ("tqa-heldout-0", "tqa", "heldout", "num:4", _turns(("user", "Two plus two?", None, False),
                                                            ("assistant", "4.", None, False))),
        ("tqa-train-0", "tqa", "train", "num:4", _turns(("user", "x?", None, False), ("assistant", "4.", None, False))),
        ("aqa-heldout-0", "aqa", "heldout", "cap:france", _turns(
            ("user", "old question", "u3", True), ("assistant", "old answer", None, True),
            ("user", "Capital of France?", "u1", True), ("assistant", "Paris it is.", None, True))),
        ("rqa-heldout-0", "rqa", "heldout", "num:4", _turns(("user", "Two plus two?", "u2", False),
                                                            ("assistant", "4.", None, False))),
        ("asr-heldout-0", "asr", "heldout", "cap:france", _turns(("user", "Hello there.", "u2", True),
                                                       ("assistant", "Hello there.", None, False))),
        ("tts-heldout-0", "tts", "heldout", "line:abc", _turns(("user", "Repeat [Good day.]", None, False),
                                                       ("assistant", "Good day.", "u3", True))),
    ]
    pd.DataFrame(rows, columns=["id", "task", "split", "fact_id", "turns"]).to_parquet(tmp_path / "samples.parquet")
    return tmp_path


def test_heldout_items(raw):
    held = load_heldout(raw)
    assert [(q.id, q.question, q.references, q.answer) for q in held.text_qa] == [
        ("tqa-heldout-0", "Two plus two?", ("four", "4"), "4."),
        ("tqa-heldout-1", "Capital of France?", ("paris",), "Paris.")]
    # aqa asks its last spoken question; rqa given as text (speak=False) is not a spoken item
    assert [(q.id, q.question, q.audio_path.name) for q in held.spoken_qa] == [
        ("aqa-heldout-0", "Capital of France?", "u1.wav")]
    assert [(a.text, a.audio_path.name) for a in held.asr] == [("Hello there.", "u2.wav")]
    assert held.tts == ("Good day.",)
    assert held.sentences == ("Hello there.",)  # the poem line (no known fact) is not text-LM domain
    assert load_audio(held.asr[0].audio_path).shape == (1600,)


def test_caps_and_missing_manifest(raw, tmp_path_factory):
    held = load_heldout(raw, max_text_qa=1, max_sentences=1)
    assert [q.id for q in held.text_qa] == ["tqa-heldout-0"] and held.sentences == ("Hello there.",)
    (raw / "facts.parquet").unlink()  # imported corpora: no facts manifest, every sentence counts
    held = load_heldout(raw)
    assert held.sentences == ("Good day.", "Hello there.") and held.text_qa[0].references == ("4.",)
    with pytest.raises(ValueError, match="generate_data"):
        load_heldout(tmp_path_factory.mktemp("empty"))


def test_one_spoken_question_per_answer_in_heldout_voices(raw):
    utts = pd.read_parquet(raw / "utterances.parquet")
    extra = pd.DataFrame({"id": ["u4", "u5"], "audio_path": ["audio/u1.wav", "audio/u2.wav"]})
    utts = pd.concat([utts, extra], ignore_index=True)
    utts["speaker"] = ["espeak:en-us+f3", "flite:rms", "piper:joe", "espeak:en-us+f3", "espeak:en-us"]
    utts.to_parquet(raw / "utterances.parquet")
    samples = pd.read_parquet(raw / "samples.parquet")
    more = [
        # same expected answer as aqa-heldout-0 (paris): a second question for it is not a distinct item
        ("aqa-heldout-1", "aqa", "heldout", "cap:france", _turns(("user", "France's capital?", "u4", True),
                                                                 ("assistant", "Paris.", None, True))),
        # spoken by a training voice: never a held-out item when speakers are given
        ("rqa-heldout-1", "rqa", "heldout", "num:4", _turns(("user", "Two and two?", "u5", True),
                                                            ("assistant", "4.", None, False))),
        ("rqa-heldout-2", "rqa", "heldout", "num:4", _turns(("user", "Two plus two?", "u4", True),
                                                            ("assistant", "4.", None, False))),
        ("asr-heldout-1", "asr", "heldout", "num:4", _turns(("user", "Two and two.", "u5", True),
                                                            ("assistant", "Two and two.", None, False))),
    ]
    more = pd.DataFrame(more, columns=samples.columns)
    pd.concat([samples, more], ignore_index=True).to_parquet(raw / "samples.parquet")

    everyone = load_heldout(raw)
    assert [q.id for q in everyone.spoken_qa] == ["aqa-heldout-0", "rqa-heldout-1"]  # first per answer
    assert [a.id for a in everyone.asr] == ["asr-heldout-0", "asr-heldout-1"]
    held = load_heldout(raw, speakers=("espeak:en-us+f3", "flite:rms"))
    assert [q.id for q in held.spoken_qa] == ["aqa-heldout-0", "rqa-heldout-2"]
    assert [a.id for a in held.asr] == ["asr-heldout-0"]
    assert [a.id for a in load_heldout(raw, speakers=("espeak:en-us+f3",)).asr] == []  # u2 is flite:rms


def test_speakers_need_a_speaker_column(raw):
    with pytest.raises(ValueError, match="no speaker column"):
        load_heldout(raw, speakers=("flite:rms",))


def test_heldout_text_samples_are_the_perplexity_sentences_first(raw):
    """Issue 20: held-out ``text`` samples (every held-out fact in every held-out phrasing) come first, in id
    order, each with its fact; an ASR/TTS sentence already among them is not counted twice; train text never."""
    samples = pd.read_parquet(raw / "samples.parquet")
    extra = [
        ("text-heldout-00001", "text", "heldout", "num:4", _turns(("assistant", "Two and two make four.", None, False))),
        ("text-heldout-00000", "text", "heldout", "cap:france", _turns(("assistant", "Hello there.", None, False))),
        ("text-train-00000", "text", "train", "num:4", _turns(("assistant", "Two plus two is four.", None, False))),
    ]
    pd.concat([samples, pd.DataFrame(extra, columns=samples.columns)]).to_parquet(raw / "samples.parquet")
    held = load_heldout(raw)
    assert held.sentences == ("Hello there.", "Two and two make four.")
    assert held.sentence_facts == ("cap:france", "num:4")
    assert [q.fact_id for q in held.text_qa] == ["num:4", "cap:france"]
    capped = load_heldout(raw, max_sentences=1)
    assert capped.sentences == ("Hello there.",) and capped.sentence_facts == ("cap:france",)
