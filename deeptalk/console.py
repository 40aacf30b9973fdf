"""What a person sees in the terminal, and the full log beside it.

The console shows the lines meant for a reader (records logged with ``extra=CONSOLE``: one line per step, the
run summary), every warning and error of the project, errors of libraries, and progress bars (training: loss
and ETA). Everything at INFO and above, libraries included, goes to the log file. Library chatter is silenced
where it starts: Great Expectations' "Skipping registering function", httpx's request lines, transformers'
shard-writing bars, DeepSpeed's accelerator warning, Prefect's state lines.

    setup_console(log_file="reports/run.log")      # python -m flows run
    log.info("train_s2a  95.0 s  loss 2.31 → 1.12", extra=CONSOLE)
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

CONSOLE = {"console": True}  # extra= of a record meant for the terminal
PROJECT_LOGGERS = ("deeptalk", "flows")  # the library and its Prefect shells (top-level flows/)
# libraries whose INFO lines are noise for a reader; their warnings go to the log file only (DeepSpeed
# re-attaches its own stdout handler when imported, so it is filtered rather than levelled)
# (Prefect's own INFO lines stay at INFO: they are the task-run logs of the UI; the console filter keeps them
# off the terminal.)
QUIET_LIBRARIES = ("great_expectations", "httpx", "httpcore", "urllib3", "botocore", "s3fs", "fsspec",
                   "bentoml", "filelock", "numba", "matplotlib", "PIL", "asyncio", "DeepSpeed",
                   "torch.distributed", "transformers", "faster_whisper")
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConsoleFilter(logging.Filter):
    """Pass records meant for a reader: marked ``console``, the project's warnings, anyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", False):
            return True
        if record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and record.name.split(".")[0] in PROJECT_LOGGERS


class _ToFileOnly(logging.Filter):
    """On a library logger that writes to the terminal itself (DeepSpeed): hand the record to the log file,
    keep it off the terminal unless it is an error."""

    def __init__(self, file_handler: logging.Handler | None):
        super().__init__()
        self.file_handler = file_handler

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if self.file_handler is not None and record.levelno >= self.file_handler.level:
            self.file_handler.handle(record)
        return False


def setup_console(log_file: str | Path | None = None, verbose: bool = False, level: str | int = "INFO") -> Path | None:
    """Configure the root logger for a command line run: a terse console (everything with ``verbose``) and,
    when ``log_file`` is given, the full log there. Idempotent; returns the log file's path."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # ours from an earlier call, Prefect's console handler, basicConfig's
        root.removeHandler(handler)
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s" if not verbose else FILE_FORMAT))
    if not verbose:
        console.addFilter(ConsoleFilter())
    root.addHandler(console)
    file_handler = None
    path = None
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, mode="a")
        file_handler.setLevel(level)
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
        root.addHandler(file_handler)
    quiet_libraries(file_handler, verbose)
    return path


def quiet_libraries(file_handler: logging.Handler | None = None, verbose: bool = False) -> None:
    """Silence library output at its source: their INFO lines are dropped, their warnings go to the log file
    (the console filter keeps them off the terminal), Python warnings become log records, transformers'
    per-save progress bars are off."""
    logging.captureWarnings(True)  # "py.warnings" records: log file, not terminal
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if name == "DeepSpeed":
            logger.filters = [f for f in logger.filters if not isinstance(f, _ToFileOnly)]
            if not verbose:
                logger.addFilter(_ToFileOnly(file_handler))
    # transformers' "Writing model shards" / "Loading weights" bars: HF_HUB_DISABLE_PROGRESS_BARS
    # (deeptalk.environment) switches them off at import; this covers a transformers imported earlier
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        hf_logging.disable_progress_bar()


def _loss_span(out_dir: str | Path) -> str:
    """``loss 2.31 → 1.12`` from a training run's ``metrics.jsonl`` (first and last logged interval)."""
    import json

    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        return ""
    losses = [json.loads(line)["loss"] for line in path.read_text().splitlines() if '"loss"' in line]
    return f"loss {losses[0]:.3f} → {losses[-1]:.3f}" if losses else ""


def step_headline(summary: dict) -> str:
    """The key figure of a step's summary, in a few words ("" when the summary has none we know)."""
    if "phases" in summary or ("out" in summary and "tokens_per_s" in summary):
        out = summary.get("out") or (summary.get("phases") or [{}])[-1].get("out", "")
        steps = sum(p.get("steps", 0) for p in summary.get("phases", [summary]))
        span = _loss_span(out) if out else ""
        return ", ".join(x for x in (f"{steps} steps" if steps else "", span) if x)
    if "passed" in summary:
        return f"gate {'passed' if summary['passed'] else 'FAILED'} ({len(summary.get('metrics', {}))} metrics)"
    if "model_tag" in summary:
        return f"model {summary['model_tag']}" + (f", bento {summary['bento_tag']}" if summary.get("bento_tag") else "")
    if "speech_experts_per_layer" in summary:
        return f"rule {summary.get('rule')}, speech experts per layer {summary['speech_experts_per_layer']}"
    if "inputs" in summary and "targets" in summary:
        return f"{summary['inputs']} inputs, {summary['targets']} targets ({summary.get('input_seconds', 0):.0f} s)"
    if "facts" in summary and "utterances" in summary:
        return (f"{summary['utterances']} utterances ({summary.get('audio_seconds', 0) / 60:.1f} min of audio), "
                f"vocabulary {summary.get('vocab_size')}")
    if "validated" in summary:
        return f"valid: {summary.get('utterances')} utterances, {summary.get('samples')} samples"
    if isinstance(summary.get("samples"), int) and "vocab_size" in summary:
        return f"{summary['samples']} sequences, mean length {summary.get('mean_length')}"
    if "encoder_params" in summary:
        return f"{summary.get('source')} encoder, {summary['encoder_params'] / 1e6:.1f} M parameters"
    if summary.get("kind") == "embedded":
        return f"embedded codec over {len(summary.get('speakers', []))} voices"
    counts = {k: v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)}
    return ", ".join(f"{v} {k}" for k, v in list(counts.items())[:3])


def step_line(name: str, wall_s: float, summary: dict, note: str = "") -> str:
    """``  train_s2a        95.0 s  80 steps, loss 2.310 → 1.120``: one console line per step."""
    figure = note or step_headline(summary)
    return f"  {name:<16}{wall_s:>8.1f} s  {figure}".rstrip()
