"""Readers for what training wrote: per-stage metrics logs (loss curves) and expert-load shares.

The runner (``deeptalk.training``) writes ``metrics.jsonl`` into every phase directory: ``models/base`` for
text_pretrain, ``models/stages/<stage>`` for a stage's last phase and ``models/stages/<stage>/phases/<phase>``
for earlier phases of a multi-phase baseline. Each record has ``step``, ``loss``, ``stream_losses`` and
``expert_load`` (``{modality: {"positions": n, "share": [layers][experts]}}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeptalk.training.stages import BY_NAME

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """JSON lines of one metrics log; unreadable (half-written) lines are skipped with a warning."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d is not valid JSON; skipped", path, n)
    return records


def find_stage_logs(models_dir: str | Path) -> dict[str, Path]:
    """``{stage name: metrics.jsonl}`` for ``models/base`` (as ``text_pretrain``) and every stage and phase."""
    models_dir = Path(models_dir)
    found: dict[str, Path] = {}
    base = models_dir / "base" / METRICS_FILE
    if base.is_file():
        found["text_pretrain"] = base
    stages = models_dir / "stages"
    if stages.is_dir():
        dirs = [p for p in stages.iterdir() if p.is_dir()]
        rank = {name: i for i, name in enumerate(BY_NAME)}  # the chain's order; unknown directories after it
        for stage in sorted(dirs, key=lambda p: (rank.get(p.name, len(rank)), p.name)):
            phases = stage / "phases"
            if phases.is_dir():
                for phase in sorted(p for p in phases.iterdir() if (p / METRICS_FILE).is_file()):
                    found[f"{stage.name}/{phase.name}"] = phase / METRICS_FILE
            if (stage / METRICS_FILE).is_file():
                found[stage.name] = stage / METRICS_FILE
    return found


def loss_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """``step``, ``loss`` and one ``loss_<stream>`` per stream loss, per record."""
    out = []
    for r in records:
        if "step" not in r or "loss" not in r:
            continue
        row = {"step": r["step"], "loss": r["loss"]}
        row.update({f"loss_{k}": v for k, v in (r.get("stream_losses") or {}).items()})
        out.append(row)
    return out


def mean_expert_load(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per modality, the share table ``[layers, experts]`` averaged over the stage's records, weighted by the
    positions each record counted. Modalities with no positions are left out."""
    sums: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    for r in records:
        for modality, data in (r.get("expert_load") or {}).items():
            n = float(data.get("positions", 0))
            if n <= 0:
                continue
            share = np.asarray(data["share"], dtype=float)
            if modality in sums and sums[modality].shape != share.shape:
                raise ValueError(f"expert-load shape changed within a stage: {sums[modality].shape} → {share.shape}")
            sums[modality] = sums.get(modality, 0.0) + n * share
            weights[modality] = weights.get(modality, 0.0) + n
    return {m: sums[m] / weights[m] for m in sorted(sums)}


def training_curves(models_dir: str | Path) -> tuple[dict[str, list[dict]], dict[str, dict[str, np.ndarray]]]:
    """(loss curves, mean expert loads) per stage found under ``models_dir``."""
    curves, loads = {}, {}
    for name, path in find_stage_logs(models_dir).items():
        records = read_records(path)
        curves[name] = loss_records(records)
        loads[name] = mean_expert_load(records)
    return curves, loads
