"""Evaluation settings and the quality gates a model must pass before it is packaged and served.

The same :class:`GateThresholds` judge two things: ``reports/metrics.json`` from the evaluate step
(``gates.check_gates``) and the packaged model answering over HTTP at the end of ``make run``
(``service_check.judge_service``, on the gates that apply to a served model). Every gate can fail: a model
that answers every spoken input with the same sentence fails the distinct-answers gate, spoken QA relative to
typed and ASR WER; a gate whose metric is missing or undefined fails too. ``None`` disables a gate.

Per-profile thresholds live in ``configs/profiles/<profile>.yaml`` (``evaluation.gates``) only:

- ``small``: the targets of issue 10 ("A model that listens and speaks"): ASR WER on held-out voices ≤ 10 %,
  spoken QA over the same questions typed ≥ 0.85, Whisper-scored WER of the spoken answers vs the model's own
  answer text ≤ 25 %, 16 distinct answers to 16 distinct spoken questions, text drop ≤ 10 %. No small model
  has been trained against them yet.
- ``tiny``: bars calibrated on the measured tiny model, which does not reach issue 10's tiny targets (see the
  comment in ``configs/profiles/tiny.yaml`` and the README): they catch a collapsed model, runaway output and catastrophic
  forgetting, and make no quality claim.
- ``paper``: the paper's claims where it makes one (text drop ≤ 5.5 %, abstract; end-to-end latency
  ≤ 0.5 s); the paper publishes no spoken/typed, distinct-answer or answer-consistency figure, so those use
  the ``small`` targets.

``params.yaml: gates`` (or ``evaluation.gates``) overrides any of these for a run; an override there wins
over the preset, so a looser value in ``params.yaml`` loosens both the evaluate step and the service check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from deeptalk.presets import preset


@dataclass(frozen=True)
class GateThresholds:
    """Pass/fail bars on the metrics (dotted paths in ``gates.GATE_METRICS``). ``None`` disables a gate (it is
    then reported as skipped); every field defaults to ``None`` and each profile sets its own in
    ``configs/profiles/<profile>.yaml``.

    Accuracies and ratios are fractions; WERs are fractions (1.0 = 100 %); the text drop is in percent; the
    distinct-answer bar is a count out of ``EvalConfig.distinct_questions`` spoken questions.
    """

    max_text_drop_pct: float | None = None  # drop vs the original LLM (text_ability.relative_drop_pct)
    min_text_qa_acc: float | None = None  # absolute held-out text-QA accuracy of the model (text-only mode)
    min_spoken_qa_s2t: float | None = None  # speech question → text answer, reference contained
    min_spoken_over_typed: float | None = None  # s2t accuracy / accuracy on the same questions typed
    min_distinct_answers: int | None = None  # distinct normalised answers to distinct spoken questions
    min_spoken_qa_s2s: float | None = None  # speech question → speech answer (ASR of the generated audio)
    max_speech_wer_own_text: float | None = None  # Whisper transcript of spoken answers vs their own text
    max_asr_wer: float | None = None  # model as recogniser, held-out voices
    max_tts_wer: float | None = None  # TTS task: generated speech vs the ground-truth sentence
    max_first_audio_ms: float | None = None  # end of user input → first audio chunk, median
    max_rtf: float | None = None  # generation wall time / generated audio duration

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        """The gates of ``profile``: ``evaluation.gates`` in ``configs/profiles/<profile>.yaml`` (sources there)."""
        return preset(cls, "evaluation", profile, key="gates")


@dataclass(frozen=True)
class EvalConfig:
    """How much held-out data each benchmark uses and how generation is bounded.

    ``max_*`` sample counts cap the held-out split (0 = all); the same caps are applied to the base model so the
    relative text drop compares like with like.
    """

    max_text_qa: int = 64  # held-out text questions (task tqa; rqa/aqa questions given as text are added)
    max_ppl_samples: int = 64  # held-out text sequences for perplexity
    max_spoken_qa: int = 16  # held-out spoken questions (aqa/rqa with user audio), one per expected answer
    distinct_questions: int = 16  # first N spoken questions: spoken_qa.distinct_answers, the service check
    max_asr: int = 16
    max_tts: int = 10
    max_latency: int = 3  # spoken questions streamed through the service generator
    max_answer_tokens: int = 16  # greedy text answer length cap (text-only mode)
    max_audio_frames: int = 96  # cap on generated codec frames per answer (~8 s at 85 ms per frame)
    latency_warmup: int = 1  # untimed generator runs before timing (first-call allocations)
    min_base_qa_correct: int = 5  # QA accuracy enters the text drop only if the base answers this many correctly
    stage: str = "s3"  # the trained stage (models/stages/<stage>) the evaluate step scores and gates
    # the Whisper that scores speech (asr_scorer.load_scorer): tiny.en | base (offline, PyPI) or a local
    # CTranslate2 / transformers Whisper directory, relative to the project root (paper: Whisper-large-v3)
    scorer: str = "tiny.en"
    gates: GateThresholds = field(default_factory=lambda: GateThresholds.for_profile("tiny"))

    def __post_init__(self) -> None:
        if self.distinct_questions < 1:
            raise ValueError(f"evaluation.distinct_questions must be >= 1, got {self.distinct_questions}")
        if 0 < self.max_spoken_qa < self.distinct_questions:
            raise ValueError(f"evaluation.max_spoken_qa ({self.max_spoken_qa}) must be 0 (all) or >= "
                             f"distinct_questions ({self.distinct_questions}): distinct answers are counted "
                             "over the evaluated spoken questions")

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        """The ``evaluation`` section of ``configs/profiles/<profile>.yaml``."""
        return preset(cls, "evaluation", profile)
