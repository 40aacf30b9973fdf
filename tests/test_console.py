"""The terminal shows one line per step and the project's warnings; library chatter goes to the log file."""

import json
import logging

import pytest

from deeptalk.console import CONSOLE, setup_console, step_headline, step_line


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_console_shows_reader_lines_and_the_file_keeps_the_rest(tmp_path, capsys, restore_logging):
    import deepspeed  # noqa: F401  (as in a run: its logger writes to stdout itself and does not propagate)

    capsys.readouterr()  # what importing it printed before the console was set up
    log_file = setup_console(tmp_path / "run.log")
    reached_deepspeed_handlers: list[str] = []  # its own handler's stream is whatever stdout was at import

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reached_deepspeed_handlers.append(record.getMessage())

    spy = Spy()
    logging.getLogger("DeepSpeed").addHandler(spy)
    logging.getLogger("great_expectations._docs_decorators").info("Skipping registering function x")
    logging.getLogger("httpx").info('HTTP Request: GET http://127.0.0.1/readyz "HTTP/1.1 200 OK"')
    logging.getLogger("httpx").warning("a library warning")
    logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
    logging.getLogger("deeptalk.steps").info("step generate_data: start")
    logging.getLogger("deeptalk.steps").info("  generate_data  1.0 s  9 utterances", extra=CONSOLE)
    logging.getLogger("deeptalk.training").warning("a project warning")
    logging.getLogger("flows.exchange").warning("a shell's warning")
    logging.getLogger("DeepSpeed").warning("Setting accelerator to CPU.")
    logging.getLogger("DeepSpeed").error("a DeepSpeed error")
    logging.getLogger("DeepSpeed").removeHandler(spy)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["  generate_data  1.0 s  9 utterances", "a project warning",
                                     "a shell's warning"]
    assert reached_deepspeed_handlers == ["a DeepSpeed error"]  # its terminal handler: errors only
    text = log_file.read_text()
    assert "Skipping registering" not in text and "HTTP Request" not in text  # silenced at the source
    for kept in ("a library warning", "Finished in state", "step generate_data: start", "Setting accelerator"):
        assert kept in text


def test_step_lines_name_the_key_figure(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": l}) + "\n"
                                                    for s, l in ((10, 2.5), (20, 1.25))))
    training = {"stage": "s2a", "out": str(tmp_path), "phases": [{"steps": 20, "out": str(tmp_path)}]}
    assert step_headline(training) == "20 steps, loss 2.500 → 1.250"
    assert step_headline({"stage": "s3", "passed": True, "metrics": {"a": 1, "b": 2}}) == "gate passed (2 metrics)"
    line = step_line("train_s2a", 95.04, training)
    assert line == "  train_s2a           95.0 s  20 steps, loss 2.500 → 1.250"
    assert step_headline({"unexpected": "shape"}) == ""
