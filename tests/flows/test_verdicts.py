"""Expected failures end a command as a short verdict (what failed, value, threshold, what to do) with the
traceback in the log file only; an unexpected error keeps its traceback on the console."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from deeptalk.console import setup_console
from deeptalk.evaluation.config import GateThresholds
from deeptalk.evaluation.gates import GateFailed, JudgedModel, check_gates
from flows.pipeline import check_parameters, project_lock
from flows.verdicts import BadParameters, HideExpectedTracebacks, ProjectBusy, report, verdict_lines

METRICS = {"text": {"drop_pct": 35.0, "qa_acc": 0.5}, "asr": {"wer": 0.92}}


def _gate_failure() -> GateFailed:
    verdict = check_gates(METRICS, GateThresholds(max_text_drop_pct=10.0, min_text_qa_acc=0.2, max_asr_wer=0.6),
                          only=["max_text_drop_pct", "min_text_qa_acc", "max_asr_wer"])
    return GateFailed(type(verdict)(verdict.passed, verdict.failures, verdict.checks, JudgedModel("s3", "ab" * 32)))


def _raised(err: BaseException) -> BaseException:
    try:
        raise err
    except BaseException as caught:  # noqa: BLE001 (a traceback to log)
        return caught


def test_a_failed_gate_names_each_check_value_and_threshold():
    lines = verdict_lines(_gate_failure(), log_file="reports/run.log")
    text = "\n".join(lines)
    assert len(lines) <= 15 and lines[0].startswith("QUALITY GATE FAILED for s3") and "2 of 3 checks" in lines[0]
    assert "text.drop_pct" in text and "35" in text and "must be <= 10" in text
    assert "asr.wer" in text and "0.92" in text and "must be <= 0.6" in text
    assert "text.qa_acc" not in text, "a passing check is not a failure"
    assert lines[-1] == "Full log, with the traceback: reports/run.log"


def test_the_console_gets_the_verdict_and_the_log_file_the_traceback(tmp_path, monkeypatch):
    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", console)
    log_file = setup_console(tmp_path / "run.log")
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.addFilter(HideExpectedTracebacks())
    prefect_log = logging.getLogger("prefect.task_runs")
    err = _raised(_gate_failure())
    prefect_log.error("Task run failed with exception: %r - Retries are exhausted", err, exc_info=err)
    logging.getLogger("prefect.flow_runs").error(
        "Finished in state Failed('Flow run encountered an exception: GateFailed: quality gate failed')")
    assert report(err, log_file) == 1
    for handler in logging.getLogger().handlers:
        handler.flush()
    shown = console.getvalue()
    assert "Traceback" not in shown and "QUALITY GATE FAILED" in shown and len(shown.strip().splitlines()) <= 15
    assert "Traceback" in log_file.read_text() and "GateFailed" in log_file.read_text()
    bug = _raised(KeyError("a bug"))
    prefect_log.error("Task run failed with exception: %r", bug, exc_info=bug)
    assert "Traceback" in console.getvalue(), "an unexpected error keeps its traceback"
    setup_console()


def test_bad_parameters_and_a_busy_project_read_as_verdicts(tmp_path):
    with pytest.raises(BadParameters) as bad:
        check_parameters("tiny", str(tmp_path / "params.yaml"), ["s9"], None, None, None)
    assert verdict_lines(bad.value)[0].startswith("BAD PARAMETERS: unknown stage(s) ['s9']")
    with project_lock(tmp_path):
        with pytest.raises(ProjectBusy) as busy:
            with project_lock(tmp_path):
                pass
    assert verdict_lines(busy.value)[0].startswith("NOT STARTED: another pipeline run holds")
