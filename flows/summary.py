"""The end of ``make run``: every number in ``reports/run_summary.json``, and at most 30 lines for a person:
what was trained, the metrics against their gates, three example answers, where the report is, how to serve."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from deeptalk.config import ProjectConfig
from deeptalk.console import CONSOLE, step_headline
from flows.prefect_ui import gate_rows
from deeptalk.steps import BY_NAME

log = logging.getLogger(__name__)

MAX_LINES = 30
SUMMARY_FILE = "run_summary.json"


def write_summary(cfg: ProjectConfig, pipeline: dict, service: dict) -> Path:
    path = cfg.paths.reports / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pipeline": pipeline, "service": service}, indent=2, default=str) + "\n")
    return path


def _short(text: Any, width: int = 48) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_lines(cfg: ProjectConfig, pipeline: dict, service: dict, summary_path: Path,
                  log_path: Path | None) -> list[str]:
    """The closing lines (≤ :data:`MAX_LINES`), from the step summaries, ``reports/gate.json`` and the
    service check."""
    trained = [name for name in pipeline if name in BY_NAME and BY_NAME[name].heavy]
    lines = [f"── DeepTalk {cfg.profile}: {len(pipeline)} steps ──"]
    if trained:
        last = pipeline[trained[-1]]
        lines.append(f"trained {' → '.join(trained)}" + (f" ({step_headline(last)})" if step_headline(last) else ""))
    gate_path = cfg.paths.reports / "gate.json"
    if gate_path.exists():
        gate = json.loads(gate_path.read_text())
        rows = gate_rows(gate)
        active = [r for r in rows if r["result"] != "skipped"]
        lines.append(f"quality gate {'PASSED' if gate.get('passed') else 'FAILED'}: {len(active)} checks "
                     f"({len(rows) - len(active)} off)")
        lines += [f"  {r['result']:<5} {r['metric']:<32} {str(r['value']):>9}  {r['threshold']}" for r in active]
    verdict = "passed" if service.get("ok") else "FAILED"
    quality = service.get("quality", {})
    lines.append(f"served model: {service.get('questions', 0)} held-out spoken questions, check {verdict}"
                 + (f"; failed calls {service['failed_calls']}" if service.get("failed_calls") else ""))
    for failure in (quality.get("gates") or {}).get("failures", []):
        lines.append(f"  FAILED {failure.get('message')}")
    for e in service.get("examples", [])[:3]:
        mark = "✓" if e.get("correct") else "✗"
        heard = f" · heard: {_short(e.get('heard'), 32)!r}" if e.get("heard") is not None else ""
        lines.append(f"  {mark} {_short(e.get('question'), 40)!r} → {_short(e.get('answer'), 40)!r}{heard}")
    lines.append(f"report: {cfg.paths.reports / 'index.html'}   numbers: {summary_path}"
                 + (f"   log: {log_path}" if log_path else ""))
    lines.append("serve: bentoml serve service:DeepTalk --port 3000, then open http://127.0.0.1:3000/demo")
    if len(lines) > MAX_LINES:  # many failures: keep the head and the way out
        lines = [*lines[: MAX_LINES - 3], f"  … {len(lines) - MAX_LINES + 1} more lines in {summary_path}",
                 *lines[-2:]]
    return lines


def print_summary(cfg: ProjectConfig, pipeline: dict, service: dict, summary_path: Path,
                  log_path: Path | None) -> list[str]:
    lines = summary_lines(cfg, pipeline, service, summary_path, log_path)
    for line in lines:
        log.info("%s", line, extra=CONSOLE)
    return lines
