"""Evaluation settings and the quality gates a model must pass before it is packaged.

Thresholds differ per profile because the models differ by orders of magnitude in size and training time:

- ``tiny`` is a pipeline smoke test (a 6 M-parameter model trained for minutes on 2 CPU cores). Its gates only
  catch a *broken* pipeline; they are NOT quality claims. Measured on the tiny S3 model (2 shared CPU cores,
  2026-11-25): text drop 15.5 %, spoken QA s→t 0.0 and s→s 0.0, ASR WER 1.40, TTS WER 1.00 (vs truth),
  first audio 196 ms (median), RTF 0.39; a randomly initialised model instead gave ASR WER 14 (runaway output).
  So tiny gates: text drop ≤ 50 % (catastrophic forgetting), ASR WER ≤ 2 and TTS WER ≤ 1.5 (no runaway babble),
  first audio ≤ 2 s, RTF ≤ 2; spoken-QA accuracy is not gated because a tiny model answers no spoken question.
- ``small`` is sized to reproduce the paper's comparison; its gates are loose quality bars, set before any
  measured small run (adjust them from ``reports/compare.json``).
- ``paper`` uses the paper's claims: text drop ≤ 5.5 % (abstract) and end-to-end latency ≤ 0.5 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self


@dataclass(frozen=True)
class GateThresholds:
    """Pass/fail bars on ``reports/metrics.json``. ``None`` disables a gate (it is then reported as skipped).

    Accuracies are fractions in [0, 1]; WERs are fractions (1.0 = 100 %); the text drop is in percent.
    """

    max_text_drop_pct: float | None = 50.0  # relative drop vs the original LLM (see text_ability.relative_drop_pct)
    min_text_qa_acc: float | None = None  # absolute held-out text-QA accuracy of the model (text-only mode)
    min_spoken_qa_s2t: float | None = None  # speech question → text answer, reference contained
    min_spoken_qa_s2s: float | None = None  # speech question → speech answer (ASR of the generated audio)
    max_asr_wer: float | None = 2.0  # model as recogniser
    max_tts_wer: float | None = 1.5  # generated speech vs ground-truth text
    max_first_audio_ms: float | None = 2000.0  # end of user input → first audio chunk, median
    max_rtf: float | None = 2.0  # generation wall time / generated audio duration

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        if profile == "tiny":
            # Smoke bars (module docstring): keep most text knowledge, no runaway output, bounded latency.
            return cls()
        if profile == "small":
            return cls(
                max_text_drop_pct=30.0, min_text_qa_acc=None, min_spoken_qa_s2t=0.05, min_spoken_qa_s2s=None,
                max_asr_wer=1.0, max_tts_wer=1.2, max_first_audio_ms=3000.0, max_rtf=3.0,
            )
        if profile == "paper":
            return cls(
                max_text_drop_pct=5.5, min_text_qa_acc=None, min_spoken_qa_s2t=0.3, min_spoken_qa_s2s=0.25,
                max_asr_wer=0.15, max_tts_wer=0.1, max_first_audio_ms=500.0, max_rtf=1.0,
            )
        raise ValueError(f"unknown profile {profile!r}; choose tiny, small or paper")


@dataclass(frozen=True)
class EvalConfig:
    """How much held-out data each benchmark uses and how generation is bounded.

    ``max_*`` sample counts cap the held-out split (0 = all); the same caps are applied to the base model so the
    relative text drop compares like with like.
    """

    max_text_qa: int = 64  # held-out text questions (task tqa; rqa/aqa questions given as text are added)
    max_ppl_samples: int = 64  # held-out text sequences for perplexity
    max_spoken_qa: int = 16  # held-out spoken questions (task aqa/rqa with user audio)
    max_asr: int = 16
    max_tts: int = 10
    max_latency: int = 3  # spoken questions streamed through the service generator
    max_answer_tokens: int = 16  # greedy text answer length cap (text-only mode)
    max_audio_frames: int = 96  # cap on generated codec frames per answer (~8 s at 85 ms per frame)
    latency_warmup: int = 1  # untimed generator runs before timing (first-call allocations)
    min_base_qa_correct: int = 5  # QA accuracy enters the text drop only if the base answers this many correctly
    stage: str = "s3"  # the trained stage (models/stages/<stage>) the evaluate step scores and gates
    gates: GateThresholds = field(default_factory=GateThresholds)

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        gates = GateThresholds.for_profile(profile)
        if profile == "tiny":
            return cls(gates=gates)
        if profile == "small":
            return cls(
                # compare evaluates 5+ systems on CPU: spoken answers are the expensive part (~10 s each)
                max_text_qa=200, max_ppl_samples=200, max_spoken_qa=40, max_asr=40, max_tts=24, max_latency=8,
                max_answer_tokens=24, max_audio_frames=120, gates=gates,
            )
        if profile == "paper":
            return cls(
                max_text_qa=0, max_ppl_samples=1000, max_spoken_qa=0, max_asr=0, max_tts=0, max_latency=32,
                max_answer_tokens=64, max_audio_frames=1000, gates=gates,
            )
        raise ValueError(f"unknown profile {profile!r}; choose tiny, small or paper")
