"""What the Prefect UI shows of a run: the project's log lines in each task run, live progress while a step
runs, and the gate verdict as an artifact.

The library never imports Prefect. The project's loggers (``deeptalk.*``, and ``flows.*`` of these shells: the
file exchange of a step on another machine) are forwarded to the API here, and progress is read from the progress
bars the library already draws (tqdm: training shows step, loss and ETA; codec fitting its iterations):
:func:`active_bars` turns them into plain data, :class:`ProgressWatch` publishes them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from deeptalk.config import ProjectConfig
from deeptalk.console import PROJECT_LOGGERS

log = logging.getLogger(__name__)


class _InRun(logging.Filter):
    """Only records that belong to a flow or task run can go to the API (others: the console and file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "flow_run_id", None):
            return True
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def forward_project_logs() -> None:
    """Send the project's records (``deeptalk.*``, ``flows.*``) of this process to the Prefect API, so each task
    run shows the step's own lines. Idempotent; works in ``python -m flows run`` and in a worker alike (where
    Prefect's logging setup ran before our code was imported, so ``PREFECT_LOGGING_EXTRA_LOGGERS`` would come too
    late)."""
    from prefect.logging.handlers import APILogHandler

    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)  # a worker's root logger is at WARNING
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            handler = APILogHandler()
            handler.addFilter(_InRun())
            logger.addHandler(handler)


@dataclass(frozen=True)
class BarState:
    """One live progress bar: ``desc`` (training: the stage), ``n`` of ``total``, ``loss`` when the bar shows
    one, seconds ``elapsed`` and the estimated seconds ``eta``."""

    desc: str
    n: int
    total: int
    loss: float | None
    elapsed: float
    eta: float | None

    @property
    def percent(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def describe(self) -> str:
        parts = [f"{self.desc}: {self.n}/{self.total} ({self.percent:.0f} %)"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.eta is not None:
            parts.append(f"ETA {_clock(self.eta)}")
        return ", ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


_LOSS = re.compile(r"(?:^|[ ,])loss=([-+0-9.eE]+)")


def active_bars() -> list[BarState]:
    """The progress bars open in this process (tqdm keeps a registry of them), oldest first."""
    from tqdm import tqdm

    bars = []
    for bar in sorted(list(getattr(tqdm, "_instances", ())), key=lambda b: getattr(b, "pos", 0)):
        if getattr(bar, "disable", True) or not bar.total:
            continue
        info = bar.format_dict
        match = _LOSS.search(str(info.get("postfix") or ""))
        rate = info.get("rate") or (info["n"] / info["elapsed"] if info.get("elapsed") else None)
        eta = (info["total"] - info["n"]) / rate if rate else None
        bars.append(BarState(str(bar.desc or "").rstrip(": "), int(info["n"]), int(info["total"]),
                             float(match.group(1)) if match else None, float(info.get("elapsed") or 0.0), eta))
    return bars


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


class ProgressWatch:
    """While a step runs, publish its progress: a Prefect progress artifact (``progress-<step>``) updated
    every ``poll_s`` seconds, and a task-run log line every ``log_every_s`` seconds. The step's own thread
    is never touched; a failure to publish is logged once and the step goes on."""

    def __init__(self, step_name: str, logger: Any, poll_s: float = 2.0, log_every_s: float = 30.0):
        self.step_name, self.logger, self.poll_s, self.log_every_s = step_name, logger, poll_s, log_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._artifact = None
        self.last: BarState | None = None

    def __enter__(self) -> ProgressWatch:
        from prefect.context import TaskRunContext

        try:
            if TaskRunContext.get() is None:  # outside a task run the artifact would belong to nothing
                raise RuntimeError("not in a task run")
            self._artifact = create_progress_artifact(
                0.0, key=f"progress-{_artifact_key(self.step_name)}", description=f"{self.step_name}: starting")
        except Exception as err:  # no API (tests), or the server hiccuped: progress is a nicety
            log.debug("no progress artifact for %s: %s", self.step_name, err)
        self._thread = threading.Thread(target=self._run, name=f"progress-{self.step_name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._publish(100.0 if exc_type is None else (self.last.percent if self.last else 0.0),
                      f"{self.step_name}: {'done' if exc_type is None else 'failed'}")

    def _run(self) -> None:
        last_log = 0.0
        elapsed = 0.0
        while not self._stop.wait(self.poll_s):
            elapsed += self.poll_s
            bars = active_bars()
            if not bars:
                continue
            bar = bars[-1]  # the innermost: training's step bar, the codec's current level
            self.last = bar
            self._publish(bar.percent, f"{self.step_name} · {bar.describe()}")
            if elapsed - last_log >= self.log_every_s:
                last_log = elapsed
                self.logger.info("progress: %s", bar.describe())

    def _publish(self, percent: float, description: str) -> None:
        if self._artifact is None:
            return
        try:
            update_progress_artifact(self._artifact, min(100.0, percent), description=description)
        except Exception as err:
            log.debug("progress update for %s failed: %s", self.step_name, err)
            self._artifact = None


def gate_rows(gate: dict) -> list[dict]:
    """Every check of a stored verdict (``reports/gate.json``) as a table row: gate, metric, value, threshold,
    result."""
    rows = []
    for check in gate.get("checks", []):
        value, threshold = check.get("value"), check.get("threshold")
        rows.append({
            "gate": check.get("gate"),
            "metric": check.get("metric"),
            "value": "missing" if value is None else round(value, 4),
            "threshold": "off" if threshold is None else f"{check.get('op')} {threshold:g}",
            "result": check.get("status"),
        })
    return rows


def publish_artifacts(cfg: ProjectConfig) -> None:
    """The evaluate step's metrics (table), and the gate verdict: every check with value and threshold (table)
    plus a headline with links to the report and heatmaps (markdown)."""
    metrics_path, gate_path = cfg.paths.metrics, cfg.paths.reports / "gate.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        rows = [{"metric": key, "value": value} for key, value in _flatten(metrics).items()]
        create_table_artifact(rows, key="deeptalk-metrics", description="reports/metrics.json")
    if gate_path.exists():
        gate = json.loads(gate_path.read_text())
        verdict = "PASSED" if gate.get("passed") else "FAILED"
        create_table_artifact(gate_rows(gate), key="deeptalk-gate-checks",
                              description=f"gate {verdict}: each check of reports/gate.json")
        lines = [f"# Gate: {verdict}", "", "| gate | metric | value | threshold | result |", "|---|---|---|---|---|"]
        lines += [f"| {r['gate']} | `{r['metric']}` | {r['value']} | {r['threshold']} | {r['result']} |"
                  for r in gate_rows(gate)]
        report = cfg.paths.reports / "index.html"
        profile = cfg.paths.reports / "profile"
        images = sorted(profile.glob("*.png")) if profile.exists() else []
        lines += ["", f"Report: [{report}]({report.resolve().as_uri()})" if report.exists() else ""]
        lines += [f"- heatmap: [{p.name}]({p.resolve().as_uri()})" for p in images]
        create_markdown_artifact("\n".join(lines), key="deeptalk-gate", description="gate verdict")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
