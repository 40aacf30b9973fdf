"""The gates fail a collapsed model (one that says the same sentence whatever it is asked) and pass one that
answers: metrics through the evaluation functions' public interface on stand-in engines, judged by the
profile's gates; the served-model check's judging on collected answers, without a server."""

import pytest

from deeptalk.evaluation.asr_eval import evaluate_asr
from deeptalk.evaluation.config import EvalConfig, GateThresholds
from deeptalk.evaluation.gates import GateFailed, check_gates
from deeptalk.evaluation.heldout import QAItem, SpeechItem
from deeptalk.evaluation.service_check import ServedAnswer, judge_service
from deeptalk.evaluation.spoken_qa import evaluate_spoken_qa
from deeptalk.evaluation.tts_eval import evaluate_tts
from tests.evaluation._fakes import WORDS, Always, FakeEngine, FakeScorer, level_wav

ANSWERS = WORDS[:3] + WORDS[6:19]  # 16 distinct one-word answers the fake scorer can read back
N = EvalConfig().distinct_questions
COLLAPSED = ("The chemical symbol for chromium is Cr.", ["thanks"], 150.0)  # text, what its audio says
TARGETS = GateThresholds.for_profile("small")  # issue 10's targets (tiny holds its measured model to less)
TINY = GateThresholds.for_profile("tiny")
OTHER = {"text": {"drop_pct": 5.0}, "latency": {"first_audio_ms_median": 150.0, "rtf": 0.5}}


def _question(i: int) -> str:
    return f"question number {i}"


@pytest.fixture
def held(tmp_path):
    """16 spoken questions with distinct answers, 4 spoken ASR sentences, 2 TTS sentences."""
    spoken = [QAItem(f"aqa-{i}", _question(i), (ANSWERS[i],), level_wav(tmp_path, f"q{i}", (i + 1) / 100))
              for i in range(N)]
    asr = [SpeechItem(f"asr-{i}", f"good day {ANSWERS[i]}", level_wav(tmp_path, f"s{i}", 0.5 + i / 100))
           for i in range(4)]
    return spoken, asr, ["paris", "good"]


def _correct_script():
    script = {}
    for i, answer in enumerate(ANSWERS):
        script[round((i + 1) / 100, 2)] = (answer.capitalize() + ".", [answer], 150.0)  # spoken question
        script[_question(i)] = (answer, [answer], 150.0)  # typed question
    for i in range(4):
        script[round(0.5 + i / 100, 2)] = (f"good day {ANSWERS[i]}", [], None)  # ASR
    script.update({"paris": ("paris", ["paris"], 150.0), "good": ("good", ["good"], 150.0)})  # TTS
    return script


def _deaf_script():
    """Knows the answers when typed, says the same sentence whatever it hears."""
    script = Always(COLLAPSED)
    script.update({_question(i): (a, [a], 150.0) for i, a in enumerate(ANSWERS)})
    return script


def _metrics(engine, held) -> dict:
    spoken, asr, tts = held
    scorer = FakeScorer()
    numbers = lambda result: {k: v for k, v in result.items() if k != "examples"}  # noqa: E731
    return {**OTHER, "spoken_qa": numbers(evaluate_spoken_qa(engine, spoken, scorer, n_distinct=N)),
            "asr": numbers(evaluate_asr(engine, asr)), "tts": numbers(evaluate_tts(engine, tts, scorer))}


def test_a_model_that_answers_passes_the_targets(held):
    metrics = _metrics(FakeEngine(_correct_script()), held)
    assert metrics["spoken_qa"]["distinct_answers"] == N and metrics["spoken_qa"]["s2t_over_typed"] == 1.0
    assert metrics["asr"]["wer"] == 0.0 and metrics["spoken_qa"]["speech_wer_own_text"] == 0.0
    verdict = check_gates(metrics, TARGETS)
    assert verdict.passed, verdict.failures


def test_a_collapsed_model_fails_the_targets_and_the_tiny_bars(held):
    metrics = _metrics(FakeEngine(Always(COLLAPSED)), held)
    sqa = metrics["spoken_qa"]
    assert sqa["distinct_answers"] == 1 and sqa["s2t_acc"] == 0.0 and sqa["typed_acc"] == 0.0
    verdict = check_gates(metrics, TARGETS)
    failed = {f.metric: f for f in verdict.failures}
    assert {"spoken_qa.distinct_answers", "spoken_qa.s2t_over_typed", "asr.wer",
            "spoken_qa.speech_wer_own_text"} <= failed.keys()
    assert failed["spoken_qa.distinct_answers"].value == 1
    assert failed["spoken_qa.s2t_over_typed"].value is None  # typed 0 too: the ratio is undefined, not a pass
    assert failed["asr.wer"].value > TARGETS.max_asr_wer
    message = str(GateFailed(verdict))
    assert "spoken_qa.distinct_answers = 1 violates min_distinct_answers: must be >= 16" in message
    tiny = {f.metric for f in check_gates(metrics, TINY).failures}
    assert "spoken_qa.distinct_answers" in tiny  # the tiny bars catch a collapsed model too


def test_a_model_that_cannot_hear_fails_spoken_over_typed(held):
    metrics = _metrics(FakeEngine(_deaf_script()), held)
    assert metrics["spoken_qa"]["typed_acc"] == 1.0 and metrics["spoken_qa"]["s2t_over_typed"] == 0.0
    failed = {f.metric: f.value for f in check_gates(metrics, TARGETS).failures}
    assert failed["spoken_qa.s2t_over_typed"] == 0.0 and failed["spoken_qa.distinct_answers"] == 1


def test_a_missing_speech_metric_fails(held):
    metrics = _metrics(FakeEngine(_correct_script()), held)
    del metrics["spoken_qa"]  # e.g. a corpus without held-out spoken questions
    failed = [f.metric for f in check_gates(metrics, TARGETS).failures]
    assert failed == ["spoken_qa.s2t_over_typed", "spoken_qa.distinct_answers",
                      "spoken_qa.speech_wer_own_text"]


# ---- the served-model check (flows/smoke.py collects these over HTTP) ---------------------------------
def _served(spoken, typed=None, transcript=None) -> list[ServedAnswer]:
    """Answers of a service: ``spoken(i, a)``; typed answers and transcripts right unless given."""
    typed = typed or (lambda i, a: a)
    transcript = transcript or _question
    return [ServedAnswer(_question(i), (a,), spoken(i, a), typed(i, a), transcript(i))
            for i, a in enumerate(ANSWERS)]


def test_service_check_passes_a_model_that_answers():
    judgement = judge_service(_served(lambda i, a: f"The answer is {a}."), TARGETS, N)
    assert judgement.passed, judgement.verdict.failures
    assert judgement.metrics["spoken_qa"]["distinct_answers"] == N and judgement.metrics["asr"]["wer"] == 0.0
    assert [c.gate for c in judgement.verdict.checks] == [
        "min_spoken_qa_s2t", "min_spoken_over_typed", "min_distinct_answers", "max_asr_wer"]
    assert len(judgement.examples) == 3 and judgement.examples[0] == {
        "question": "question number 0", "answer": "The answer is paris.", "references": ["paris"],
        "correct": True}
    assert judgement.lines()[-1].startswith("served model check passed: spoken_qa.s2t_over_typed = 1")
    assert judgement.listens is True and judgement.lines()[-2].startswith("the model listens (held-out voices")


def test_service_check_fails_a_collapsed_service():
    sentence = COLLAPSED[0]
    collapsed = _served(lambda i, a: sentence, lambda i, a: sentence, lambda i: sentence)
    judgement = judge_service(collapsed, TARGETS, N)
    assert not judgement.passed
    failed = {f.metric: f.value for f in judgement.verdict.failures}
    assert failed.keys() == {"spoken_qa.s2t_over_typed", "spoken_qa.distinct_answers", "asr.wer"}
    assert failed["spoken_qa.distinct_answers"] == 1 and failed["asr.wer"] > TARGETS.max_asr_wer
    lines = judgement.lines()
    assert lines[0] == "  'question number 0' → 'The chemical symbol for chromium is Cr.' (wrong)"
    assert ("served model check FAILED: spoken_qa.distinct_answers = 1 violates min_distinct_answers: "
            "must be >= 16") in lines
    assert not judge_service(collapsed, TINY, N).passed
    assert judgement.listens is False and any(line.startswith("the model does NOT listen") for line in lines)
    deaf = judge_service(_served(lambda i, a: "Sorry, I heard nothing.", lambda i, a: a, lambda i: ""), TINY, N)
    assert deaf.listens is False and not deaf.passed  # empty transcripts, one answer: the tiny bars see it


def test_service_check_fails_a_deaf_service_and_needs_ten_questions():
    judgement = judge_service(_served(lambda i, a: COLLAPSED[0]), TARGETS, N)  # typed answers right
    assert {f.metric: f.value for f in judgement.verdict.failures}["spoken_qa.s2t_over_typed"] == 0.0
    with pytest.raises(ValueError, match="at least 10"):
        judge_service(_served(lambda i, a: a)[:9], TARGETS, N)
