"""Expected failures read as verdicts: a failed gate, a refused package, bad parameters or a project already
running end a command with what failed (check, value, threshold) and what to do, in a few lines, and exit 1.
Their tracebacks go to the log file only (``reports/run.log``); anything unexpected still shows its traceback.

Prefect logs a failed task's and flow's exception at ERROR with the traceback (twice: task, then flow), which
the console passes as errors; :class:`HideExpectedTracebacks` keeps those records of an expected failure off
the console, and :func:`verdict_lines` says it once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect.exceptions import ParameterTypeError

from deeptalk.evaluation.gates import GateFailed
from deeptalk.steps.package import PackageRefused


class BadParameters(ValueError):
    """A run's parameters or config name something that does not exist or cannot work together; nothing ran."""


class ProjectBusy(RuntimeError):
    """Another pipeline run of this project holds its run lock."""


EXPECTED = (GateFailed, PackageRefused, BadParameters, ProjectBusy, ParameterTypeError)
MAX_GATE_ROWS = 8  # failed checks listed; the rest are counted

log = logging.getLogger(__name__)


class HideExpectedTracebacks(logging.Filter):
    """On a console handler: drop records carrying an expected failure (by exception or, for Prefect's
    "Finished in state Failed(...)" lines, by its name in the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED):
            return False
        if record.name.startswith("prefect") and record.levelno >= logging.ERROR:
            message = record.getMessage()
            return not any(kind.__name__ in message for kind in EXPECTED)
        return True


def hide_expected_tracebacks() -> None:
    """Put :class:`HideExpectedTracebacks` on every terminal handler of the root logger (file handlers keep
    everything)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not any(isinstance(f, HideExpectedTracebacks) for f in handler.filters):
                handler.addFilter(HideExpectedTracebacks())


def verdict_lines(err: BaseException, log_file: Path | None = None) -> list[str]:
    """What failed and what to do, at most ~15 lines."""
    if isinstance(err, GateFailed):
        model = err.verdict.model
        judged = f" for {model.stage} (weights {model.sha256[:12]})" if model is not None else ""
        checks = [c for c in err.verdict.checks if c.status != "skipped"]
        lines = [f"QUALITY GATE FAILED{judged}: {len(err.verdict.failures)} of {len(checks)} checks"]
        for f in err.verdict.failures[:MAX_GATE_ROWS]:
            value = "missing" if f.value is None else f"{f.value:.4g}"
            check = next((c for c in checks if c.metric == f.metric), None)
            op = check.op if check is not None else "vs"
            lines.append(f"  {f.metric:<32} {value:>9}  must be {op} {f.threshold:g}")
        if len(err.verdict.failures) > MAX_GATE_ROWS:
            lines.append(f"  … and {len(err.verdict.failures) - MAX_GATE_ROWS} more (reports/gate.json)")
        lines += ["Nothing was packaged. Every metric: reports/index.html; the thresholds: evaluation.gates in",
                  "configs/profiles/<profile>.yaml or params.yaml (one run: python -m flows.pipeline with gates)."]
    elif isinstance(err, PackageRefused):
        lines = [f"PACKAGING REFUSED: {err}", "Nothing was packaged; reports/gate.json says what was judged."]
    elif isinstance(err, ProjectBusy):
        lines = [f"NOT STARTED: {err}"]
    else:  # bad parameters
        lines = [f"BAD PARAMETERS: {err}".splitlines()[0][:400], "Nothing ran; fix the parameter and run again."]
    if log_file is not None:
        lines.append(f"Full log, with the traceback: {log_file}")
    return lines


def report(err: BaseException, log_file: Path | None = None) -> int:
    """Log ``err``'s traceback to the log file only and its verdict to the console; the exit status (1)."""
    log.info("expected failure (%s), traceback for the record", type(err).__name__, exc_info=err)
    from deeptalk.console import CONSOLE

    for line in verdict_lines(err, log_file):
        log.info("%s", line, extra=CONSOLE)
    return 1
