"""Spoken QA, ASR, TTS and latency metrics on a stand-in engine with known answers (exact numbers)."""

import numpy as np
import pytest

from deeptalk.evaluation.asr_eval import evaluate_asr
from deeptalk.evaluation.heldout import QAItem, SpeechItem
from deeptalk.evaluation.latency import measure_latency, summarize_latency
from deeptalk.evaluation.spoken_qa import distinct_answers, evaluate_spoken_qa, qa_scores
from deeptalk.evaluation.tts_eval import evaluate_tts
from deeptalk.inference.events import Timings
from tests.evaluation._fakes import FakeEngine, FakeScorer
from tests.evaluation._fakes import level_wav as _wav


def test_spoken_qa_exact(tmp_path):
    engine = FakeEngine({
        0.1: ("The capital is Paris.", ["paris"], 300.0),  # s2t right, s2s right
        0.2: ("It is four.", ["london"], 200.0),  # s2t right, s2s wrong
        0.3: ("No idea.", [], None),  # wrong, and no audio
        0.4: ("London", ["four"], 250.0),  # s2t wrong, s2s right
        "capital?": ("paris", [], None),  # typed: right (asked twice)
        "2+2?": ("five", [], None),  # typed: wrong (asked twice)
    })
    items = [QAItem("a", "capital?", ("paris",), _wav(tmp_path, "a", 0.1)),
             QAItem("b", "2+2?", ("four", "4"), _wav(tmp_path, "b", 0.2)),
             QAItem("c", "capital?", ("paris",), _wav(tmp_path, "c", 0.3)),
             QAItem("d", "2+2?", ("four",), _wav(tmp_path, "d", 0.4))]
    result = evaluate_spoken_qa(engine, items, FakeScorer(), n_distinct=3)
    assert result["s2t_acc"] == 0.5 and result["s2s_acc"] == 0.5
    assert result["typed_acc"] == 0.5 and result["s2t_over_typed"] == 1.0
    assert result["distinct_answers"] == 3 and result["n_questions"] == 3  # n_distinct=3: a, b, c
    # own text vs heard: "the capital is paris"/"paris" (3 del), "it is four"/"london" (2 del + 1 sub),
    # "no idea"/"" (2 del), "london"/"four" (1 sub) → 9 errors over 10 words
    assert result["speech_wer_own_text"] == pytest.approx(9 / 10)
    assert result["n"] == 4 and result["no_audio"] == 1
    assert result["examples"][1] == {"question": "2+2?", "text": "It is four.", "typed_text": "five",
                                     "heard": "london", "references": ["four", "4"], "s2t": True,
                                     "typed": False, "s2s": False}


def test_qa_scores_ratio_and_distinct():
    refs = [("paris",), ("four", "4"), ("london",)]
    scores = qa_scores(refs, ["Paris!", "paris", "4"], ["paris", "four", "no"], n_distinct=16)
    # spoken: right, wrong ("paris" for four), wrong ("4" for london); typed: right, right, wrong
    assert scores == {"s2t_acc": pytest.approx(1 / 3), "typed_acc": pytest.approx(2 / 3),
                      "s2t_over_typed": pytest.approx(0.5), "distinct_answers": 2, "n_questions": 3}
    # typed accuracy 0: the ratio is undefined
    assert qa_scores(refs, ["paris"] * 3, ["x"] * 3, n_distinct=2)["s2t_over_typed"] is None
    assert distinct_answers(["The answer is Paris.", "the answer is paris", ""]) == 2
    with pytest.raises(ValueError, match="as many"):
        qa_scores(refs, ["paris"], ["paris"], n_distinct=3)


def test_asr_wer_exact(tmp_path):
    engine = FakeEngine({0.1: ("good day", [], None), 0.2: ("", [], None)})
    items = [SpeechItem("a", "Good day!", _wav(tmp_path, "a", 0.1)),
             SpeechItem("b", "paris four", _wav(tmp_path, "b", 0.2))]
    result = evaluate_asr(engine, items)
    assert result["wer"] == pytest.approx(2 / 4)  # second transcript empty: 2 deletions of 4 words
    assert result["n"] == 2


def test_tts_wer_vs_truth_and_vs_own_text():
    engine = FakeEngine({
        "good day": ("good day", ["good"], 100.0),  # said one of two words it wrote
        "paris": ("london", ["london"], 100.0),  # wrong words, but consistent with its own text
    })
    result = evaluate_tts(engine, ["good day", "paris"], FakeScorer())
    assert result["wer_vs_truth"] == pytest.approx(2 / 3)  # 1 deletion + 1 substitution over 3 words
    assert result["wer_vs_generated_text"] == pytest.approx(1 / 3)  # only the deletion
    assert result["no_audio"] == 0


def test_latency_summary_exact():
    t = [Timings(prefill_ms=10, first_audio_ms=100, total_ms=500, audio_seconds=1.0),
         Timings(prefill_ms=30, first_audio_ms=300, total_ms=1500, audio_seconds=2.0),
         Timings(prefill_ms=20, first_audio_ms=None, total_ms=100, audio_seconds=0.0)]
    s = summarize_latency(t)
    assert s["first_audio_ms_median"] == 200.0 and s["first_audio_ms_max"] == 300
    assert s["first_audio_ms_p90"] == pytest.approx(280.0)
    assert s["rtf"] == pytest.approx(2.1 / 3.0) and s["no_audio"] == 1 and s["prefill_ms_median"] == 20
    assert summarize_latency([Timings(first_audio_ms=None)])["rtf"] is None


def test_measure_latency_skips_warmup():
    engine = FakeEngine({0.5: ("x", ["good"], 111.0), 0.6: ("y", ["day"], 222.0)})
    result = measure_latency(engine, [np.full(10, 0.5), np.full(10, 0.6)], warmup=1)
    assert result["n"] == 2 and result["first_audio_ms_median"] == pytest.approx(166.5)
