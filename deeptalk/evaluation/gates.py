"""Quality gates: compare ``reports/metrics.json`` with the thresholds in ``EvalConfig.gates``.

``check_gates(..., only=...)`` checks a subset: ``service_check`` judges the served model's answers on the
gates that apply to them, with the same thresholds. A gate whose metric is missing, null or NaN fails.

The evaluate step writes metrics and the report first, then the verdict (``reports/gate.json``), and only then
raises :class:`GateFailed`, so a failing model can still be inspected. The verdict names the weights it judged
(stage and :func:`model_digest` of the model directory); the package step refuses unless ``passed`` is true and
the directory it would ship still has that digest.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

from deeptalk.evaluation.config import GateThresholds
from deeptalk.identity import tree_digest

# threshold field → (dotted metric path in metrics.json, comparison). "max" passes when value <= threshold.
GATE_METRICS: dict[str, tuple[str, str]] = {
    "max_text_drop_pct": ("text.drop_pct", "max"),
    "min_text_qa_acc": ("text.qa_acc", "min"),
    "min_spoken_qa_s2t": ("spoken_qa.s2t_acc", "min"),
    "min_spoken_over_typed": ("spoken_qa.s2t_over_typed", "min"),
    "min_distinct_answers": ("spoken_qa.distinct_answers", "min"),
    "min_spoken_qa_s2s": ("spoken_qa.s2s_acc", "min"),
    "max_speech_wer_own_text": ("spoken_qa.speech_wer_own_text", "max"),
    "max_asr_wer": ("asr.wer", "max"),
    "max_tts_wer": ("tts.wer_vs_truth", "max"),
    "max_first_audio_ms": ("latency.first_audio_ms_median", "max"),
    "max_rtf": ("latency.rtf", "max"),
}


class GateFailure(NamedTuple):
    metric: str
    value: float | None
    threshold: float
    message: str


@dataclass(frozen=True)
class GateCheck:
    """One row of the gate table (also the report's metrics-vs-thresholds table)."""

    gate: str  # threshold field name, e.g. "max_asr_wer"
    metric: str  # dotted metric path
    op: str  # "<=" or ">="
    threshold: float | None  # None: gate disabled
    value: float | None  # None: metric missing
    status: str  # "pass" | "fail" | "skipped"
    se: float | None = None  # the value's standard error where metrics.json has one (``<path>_se``), for reading


@dataclass(frozen=True)
class JudgedModel:
    """The weights a verdict is about: the stage and the content digest of its directory."""

    stage: str
    sha256: str  # model_digest(models/stages/<stage>)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    failures: list[GateFailure]
    checks: list[GateCheck]
    model: JudgedModel | None = None  # set by the evaluate step; the served-model check judges answers only

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": dataclasses.asdict(self.model) if self.model is not None else None,
            "failures": [f._asdict() for f in self.failures],
            "checks": [dataclasses.asdict(c) for c in self.checks],
        }


def model_digest(model_dir: str | Path) -> str:
    """Content digest of a model directory (``deeptalk.identity.tree_digest``): what the gate judged and what
    packaging ships are compared by it."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no model directory at {root}")
    return tree_digest(root)


class GateFailed(RuntimeError):
    """Raised by the evaluate step after writing the report when at least one gate fails."""

    def __init__(self, verdict: GateVerdict):
        self.verdict = verdict
        lines = "; ".join(f.message for f in verdict.failures)
        super().__init__(f"quality gate failed ({len(verdict.failures)} metric(s)): {lines}")


def lookup(metrics: dict[str, Any], path: str) -> float | None:
    """Value at a dotted path (``"asr.wer"``) as a float; None when absent, null or NaN."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None or isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    value = float(node)
    return None if math.isnan(value) else value


def check_gates(
    metrics: dict[str, Any], gates: GateThresholds, only: Collection[str] | None = None
) -> GateVerdict:
    """Check every enabled threshold (or the gates named in ``only``). A missing, null or NaN metric fails its
    gate: no number, no pass."""
    unknown = sorted(set(only or ()) - set(GATE_METRICS))
    if unknown:
        raise ValueError(f"unknown gate(s) {unknown}; valid: {sorted(GATE_METRICS)}")
    failures: list[GateFailure] = []
    checks: list[GateCheck] = []
    for gate, (path, kind) in GATE_METRICS.items():
        if only is not None and gate not in only:
            continue
        threshold = getattr(gates, gate)
        op = "<=" if kind == "max" else ">="
        value, se = lookup(metrics, path), lookup(metrics, f"{path}_se")
        if threshold is None:
            checks.append(GateCheck(gate, path, op, None, value, "skipped", se))
            continue
        threshold = float(threshold)
        if value is None:
            message = f"{path} is missing or undefined (gate {gate} requires {op} {threshold:g})"
            ok = False
        else:
            ok = value <= threshold if kind == "max" else value >= threshold
            error = "" if se is None else f" (standard error {se:.2g})"
            message = f"{path} = {value:.4g}{error} violates {gate}: must be {op} {threshold:g}"
        checks.append(GateCheck(gate, path, op, threshold, value, "pass" if ok else "fail", se))
        if not ok:
            failures.append(GateFailure(path, value, threshold, message))
    return GateVerdict(passed=not failures, failures=failures, checks=checks)


def write_verdict(verdict: GateVerdict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(verdict.to_dict(), indent=2) + "\n")
    return path


def read_verdict(path: str | Path) -> dict[str, Any]:
    """The stored verdict; raises FileNotFoundError when the evaluate step has not run."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("passed"), bool):
        raise ValueError(f"{path}: not a gate verdict (expected an object with a boolean 'passed')")
    return data
