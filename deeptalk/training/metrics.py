"""Training metrics: JSON-lines log, DVC plot files, and per-run resource figures.

``metrics.jsonl`` (one record per logging interval) is the full log. At the end of a run it is flattened into
two DVC plot files: ``plots/loss.csv`` (step, lr, loss per stream) and ``plots/expert_load.csv``
(step × modality × MoE layer × expert share), so specialisation can be watched across stages.
"""

from __future__ import annotations

import csv
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class MetricsLog:
    """Append-only JSON lines; on resume, records written after the restored step are dropped first."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # an unreadable (half-written) line is dropped on resume


def write_plots(records: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Flatten the metrics log into the DVC plot files; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    loss_path, load_path = out_dir / "loss.csv", out_dir / "expert_load.csv"
    streams = sorted({k for r in records for k in r.get("stream_losses", {})})
    with loss_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "lr", "loss", "tokens_per_s", *streams])
        for r in records:
            sl = r.get("stream_losses", {})
            writer.writerow([
                r["step"], f"{r['lr']:.6g}", f"{r['loss']:.6f}", f"{r['tokens_per_s']:.1f}",
                *[f"{sl[s]:.6f}" if s in sl else "" for s in streams],
            ])
    with load_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "modality", "layer", "expert", "share"])
        for r in records:
            for modality, data in (r.get("expert_load") or {}).items():
                for layer, row in enumerate(data["share"]):
                    for expert, share in enumerate(row):
                        writer.writerow([r["step"], modality, layer, expert, f"{share:.5f}"])
    return {"loss": loss_path, "expert_load": load_path}


class RunStats:
    """Tokens/s, wall time and peak memory of one run (peak RSS is the process high-water mark)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.tokens = 0
        self.interval_start = self.start
        self.interval_tokens = 0

    def add_tokens(self, n: int) -> None:
        self.tokens += n
        self.interval_tokens += n

    def interval_rate(self) -> float:
        """Tokens/s since the previous call (the logging interval)."""
        now = time.perf_counter()
        rate = self.interval_tokens / max(now - self.interval_start, 1e-9)
        self.interval_start, self.interval_tokens = now, 0
        return rate

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self.start

    def summary(self) -> dict[str, float]:
        out = {
            "wall_s": round(self.wall_s, 2),
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / max(self.wall_s, 1e-9), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        if torch.cuda.is_available():
            out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
