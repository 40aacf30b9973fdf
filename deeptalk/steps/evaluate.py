"""Step ``evaluate``: score the trained model, write metrics + report + gate verdict, then enforce the gate.

Outputs: ``reports/metrics.json`` (DVC metrics), ``reports/index.html`` (self-contained report) and
``reports/gate.json`` (``{"passed": bool, "model": {"stage", "sha256"}, "failures": [...]}``: the verdict names
the weights it judged, so the package step ships exactly those). They are written
*before* the gate is enforced, so a failing model can be inspected; a failure then raises
:class:`~deeptalk.evaluation.gates.GateFailed` naming every failed metric and threshold. Nothing packaged
earlier is touched here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from deeptalk.config import ProjectConfig
from deeptalk.evaluation.gates import GateFailed, JudgedModel, check_gates, model_digest, write_verdict
from deeptalk.evaluation.report import flatten, write_report
from deeptalk.evaluation.suite import evaluate_model
from deeptalk.evaluation.training_logs import training_curves
from deeptalk.runtime import setup_threads

log = logging.getLogger(__name__)

NOTES = (
    "Text ability: text-only mode, greedy decoding restricted to the text vocabulary + EOT; QA correct when a "
    "reference answer is contained in the answer; answer and text perplexities over the text block; drop % = "
    "mean over {QA accuracy, 1/answer ppl, 1/text ppl} of (base - model) / base x 100 against models/base.",
    "Spoken QA s2t uses the streamed answer text, s2s the Whisper tiny.en transcript of the streamed audio; "
    "s2t_over_typed divides s2t by the accuracy on the same questions typed (text-only answers); "
    "distinct_answers counts distinct normalised answer texts to questions with distinct expected answers; "
    "speech_wer_own_text is the WER of the answer audio's transcript against the answer's own text. "
    "TTS WER is reported against the ground-truth sentence (gated) and against the model's own text. "
    "Latency is wall clock through the service's Engine/Session on this machine, after warm-up.",
)


def run(cfg: ProjectConfig, stage: str | None = None) -> dict[str, Any]:
    setup_threads(cfg.threads)
    stage = stage or cfg.evaluation.stage
    model_dir = cfg.paths.stage(stage)
    judged = JudgedModel(stage=stage, sha256=model_digest(model_dir))  # the weights this verdict is about
    (cfg.paths.reports / "gate.json").unlink(missing_ok=True)  # no earlier verdict outlives a failed evaluation
    result = evaluate_model(cfg, model_dir)
    metrics = {"profile": cfg.profile, "stage": stage, **result.metrics}
    reports = cfg.paths.reports
    reports.mkdir(parents=True, exist_ok=True)
    cfg.paths.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    verdict = dataclasses.replace(check_gates(metrics, cfg.evaluation.gates), model=judged)
    curves, loads = training_curves(cfg.paths.root / "models")
    write_report(reports / "index.html", metrics=metrics, verdict=verdict, loss_curves=curves,
                 expert_loads=loads, title=f"DeepTalk evaluation: {stage} ({cfg.profile})", notes=NOTES,
                 examples=result.examples)
    write_verdict(verdict, reports / "gate.json")
    if not verdict.passed:
        raise GateFailed(verdict)
    log.info("quality gate passed (%d checks)", len(verdict.checks))
    numbers = {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"stage": stage, "passed": True, "metrics": numbers}
