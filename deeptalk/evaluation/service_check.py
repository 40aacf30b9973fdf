"""Judge a served model by what it answered: the quality half of ``make run``'s service check.

``flows/smoke.py`` sends held-out spoken questions in held-out voices (``heldout.load_heldout`` with
``cfg.data.heldout_speakers``, the first ``EvalConfig.distinct_questions``, each with its own expected answer)
to the running service: each WAV to ``POST /chat`` (answered as served by default, text and speech) and to
``POST /asr``, and the same question typed to ``POST /chat`` with ``speak=false``. It collects one
:class:`ServedAnswer` per question and calls :func:`judge_service`, a pure function.

The metrics are the evaluate step's, computed by the same functions (``spoken_qa.qa_scores``: reference
contained as whole words, accuracy spoken vs typed, distinct normalised answers; ``asr_scorer.wer`` of the
transcripts against the true question text) and judged by the same thresholds (``cfg.evaluation.gates``), on
the gates that a served model's text answers can show (:data:`SERVICE_GATES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deeptalk.evaluation.answers import contains_reference
from deeptalk.evaluation.asr_scorer import wer
from deeptalk.evaluation.config import GateThresholds
from deeptalk.evaluation.gates import GateVerdict, check_gates
from deeptalk.evaluation.spoken_qa import qa_scores

SERVICE_GATES = ("min_spoken_qa_s2t", "min_spoken_over_typed", "min_distinct_answers", "max_asr_wer")
LISTENING_METRICS = ("asr.wer", "spoken_qa.distinct_answers", "spoken_qa.s2t_over_typed", "spoken_qa.s2t_acc")
MIN_QUESTIONS = 10  # fewer held-out spoken questions cannot show that the served model tells inputs apart
N_EXAMPLES = 3


@dataclass(frozen=True)
class ServedAnswer:
    """The service's answers about one held-out spoken question (texts as streamed; "" when a call failed)."""

    question: str  # what the held-out voice said (the true transcript)
    references: tuple[str, ...]  # accepted answers
    spoken_answer: str  # POST /chat with the WAV
    typed_answer: str  # POST /chat with the question as text, speak=false
    transcript: str  # POST /asr with the WAV


@dataclass(frozen=True)
class ServiceJudgement:
    metrics: dict[str, Any]  # {"spoken_qa": {...}, "asr": {...}}, shaped like reports/metrics.json
    verdict: GateVerdict
    examples: list[dict[str, Any]]  # the first N_EXAMPLES questions → answers

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def lines(self) -> list[str]:
        """Human-readable: example answers, then the verdict naming each failed metric and threshold."""
        out = [f"  {e['question']!r} → {e['answer']!r} ({'correct' if e['correct'] else 'wrong'})"
               for e in self.examples]
        out.append(self.listening())
        if self.passed:
            out.append("served model check passed: " + ", ".join(
                f"{c.metric} = {c.value:.4g} ({c.op} {c.threshold:g})" for c in self.verdict.checks
                if c.status == "pass"))
        else:
            out += ["served model check FAILED: " + f.message for f in self.verdict.failures]
        return out

    @property
    def listens(self) -> bool | None:
        """Whether the served model listens, by the listening gates that are on (held-out voices: the
        transcripts' WER and distinct answers to distinct spoken questions); None when no such gate is on."""
        checks = [c for c in self.verdict.checks if c.metric in LISTENING_METRICS and c.status != "skipped"]
        return None if not checks else all(c.status == "pass" for c in checks)

    def listening(self) -> str:
        sqa, asr = self.metrics["spoken_qa"], self.metrics["asr"]
        heard = (f"held-out voices: transcript WER {asr['wer']:.2f}, {sqa['distinct_answers']} distinct answers to "
                 f"{sqa['n_questions']} questions, spoken {sqa['s2t_acc']:.2f} vs typed {sqa['typed_acc']:.2f} correct")
        verdict = {True: "the model listens", False: "the model does NOT listen", None: "listening not gated"}
        return f"{verdict[self.listens]} ({heard})"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "listens": self.listens, "metrics": self.metrics, "examples": self.examples,
                "gates": self.verdict.to_dict()}


def judge_service(
    answers: Sequence[ServedAnswer], gates: GateThresholds, n_distinct: int
) -> ServiceJudgement:
    """Score the served answers and check them against ``gates`` (only :data:`SERVICE_GATES`).

    Raises ValueError with fewer than :data:`MIN_QUESTIONS` answers: too few to judge the model.
    """
    if len(answers) < MIN_QUESTIONS:
        raise ValueError(f"the service check needs at least {MIN_QUESTIONS} held-out spoken questions, got "
                         f"{len(answers)}")
    spoken = qa_scores([a.references for a in answers], [a.spoken_answer for a in answers],
                       [a.typed_answer for a in answers], n_distinct)
    asr_wer = wer([a.question for a in answers], [a.transcript for a in answers])
    metrics = {"spoken_qa": {**spoken, "n": len(answers)}, "asr": {"wer": asr_wer, "n": len(answers)}}
    examples = [{"question": a.question, "answer": a.spoken_answer, "references": list(a.references),
                 "correct": contains_reference(a.spoken_answer, a.references)} for a in answers[:N_EXAMPLES]]
    return ServiceJudgement(metrics, check_gates(metrics, gates, only=SERVICE_GATES), examples)
