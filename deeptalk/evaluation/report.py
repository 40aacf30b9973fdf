"""Self-contained HTML report: metrics vs gate thresholds, loss curves and expert-load heatmaps.

Every plot is a PNG embedded as a ``data:`` URI, so ``reports/index.html`` can be mailed, attached to a Prefect
artifact or opened from a DVC cache without the files next to it. Inputs are plain data (dicts and arrays); the
readers for the training logs live in :mod:`deeptalk.evaluation.training_logs`.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deeptalk.evaluation.gates import GateVerdict  # noqa: E402

log = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}.pass{color:#137333;font-weight:bold}.fail{color:#c5221f;font-weight:bold}
.skipped{color:#777}.banner{padding:.6em 1em;border-radius:6px;font-size:1.2em}
.ok{background:#e6f4ea}.bad{background:#fce8e6}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f5f5f5;padding:0 3px}
"""


def figure_to_data_uri(fig: plt.Figure) -> str:
    """PNG of a figure as a data URI (no timestamp metadata, so equal plots give equal bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def loss_curve_plot(stage: str, records: Sequence[Mapping[str, Any]]) -> str | None:
    """Loss per logged step (every numeric key containing ``loss``); None when nothing plottable was logged."""
    keys = sorted({k for r in records for k, v in r.items() if "loss" in k and _is_number(v)})
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for key in keys:
        points = [(r.get("step", i), r[key]) for i, r in enumerate(records) if _is_number(r.get(key))]
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=key, linewidth=1.2)
    ax.set_title(f"{stage}: training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def expert_load_plot(stage: str, loads: Mapping[str, np.ndarray]) -> str:
    """One heatmap per modality (MoE layers × experts, share of top-k selections per layer)."""
    names = sorted(loads)
    tables = {name: np.asarray(loads[name], dtype=float) for name in names}
    for name, table in tables.items():
        if table.ndim != 2:
            raise ValueError(f"expert load {stage}/{name} must be 2-D (layers × experts), got shape {table.shape}")
    vmax = max(float(t.max()) for t in tables.values()) if tables else 1.0  # one scale: modalities comparable
    fig, axes = plt.subplots(1, len(names), figsize=(5.0 * len(names), 2.8), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], names):
        table = tables[name]
        im = ax.imshow(table, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0.0, vmax=vmax)
        ax.set_title(f"{stage}: {name} positions", fontsize=9)
        ax.set_xlabel("expert")
        ax.set_ylabel("MoE layer")
        ax.set_xticks(range(table.shape[1]))
        ax.set_yticks(range(table.shape[0]))
        ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.03, label="share of top-k")
    return figure_to_data_uri(fig)


def render_report(
    metrics: Mapping[str, Any],
    verdict: GateVerdict | None,
    loss_curves: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    expert_loads: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    title: str = "DeepTalk evaluation",
    notes: Sequence[str] = (),
    examples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> str:
    """The report as one HTML string."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]
    context = ", ".join(f"{k}: <code>{_e(metrics[k])}</code>" for k in ("profile", "stage") if k in metrics)
    if context:
        parts.append(f"<p>{context}</p>")
    if verdict is not None:
        cls, word = ("ok", "PASSED") if verdict.passed else ("bad", "FAILED")
        parts.append(f"<p class='banner {cls}'>Quality gate {word}</p>")
        if verdict.failures:
            parts.append("<ul>" + "".join(f"<li>{_e(f.message)}</li>" for f in verdict.failures) + "</ul>")
        parts.append("<h2>Metrics vs thresholds</h2><table><tr><th>gate</th><th>metric</th><th>value</th>"
                     "<th>threshold</th><th>status</th></tr>")
        for c in verdict.checks:
            threshold = "—" if c.threshold is None else f"{c.op} {c.threshold:g}"
            value = _fmt(c.value) + ("" if c.se is None or c.value is None else f" ± {c.se:.2g}")
            parts.append(f"<tr><td>{_e(c.gate)}</td><td><code>{_e(c.metric)}</code></td><td>{value}</td>"
                         f"<td>{threshold}</td><td class='{c.status}'>{c.status}</td></tr>")
        parts.append("</table>")
    if isinstance(metrics.get("text"), Mapping) and "drop_pct" in metrics["text"]:
        parts.append(text_drop_table(metrics["text"]))
    parts.append("<h2>All metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
    for key, value in flatten(metrics).items():
        parts.append(f"<tr><td><code>{_e(key)}</code></td><td>{_fmt(value)}</td></tr>")
    parts.append("</table>")
    for note in notes:
        parts.append(f"<p>{_e(note)}</p>")
    if examples:
        parts.append("<h2>Examples</h2>")
        for name, rows in examples.items():
            if rows:
                parts.append(f"<h3>{_e(name)}</h3>" + _table(rows))
    if loss_curves:
        parts.append("<h2>Loss curves</h2>")
        for stage, records in loss_curves.items():
            uri = loss_curve_plot(stage, records)
            if uri:
                parts.append(f"<h3>{_e(stage)}</h3><img alt='{_e(stage)} loss' src='{uri}'>")
    if expert_loads:
        parts.append("<h2>Expert load per stage</h2><p>Share of each expert among the top-k selections of its "
                     "layer, counted separately at speech and at text positions.</p>")
        for stage, loads in expert_loads.items():
            if loads:
                parts.append(f"<h3>{_e(stage)}</h3><img alt='{_e(stage)} expert load' "
                             f"src='{expert_load_plot(stage, loads)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, **kwargs: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(**kwargs), encoding="utf-8")
    log.info("report written to %s", path)
    return path


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as ``{"a.b": value}`` (scalars only)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif not isinstance(value, (list, tuple)):
            out[name] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


TEXT_PARTS = (  # (label, model figure, base figure, drop term) of metrics["text"]
    ("text QA accuracy", "qa_acc", "base_qa_acc", "drop_pct_qa_acc"),
    ("answer perplexity", "answer_ppl", "base_answer_ppl", "drop_pct_inv_answer_ppl"),
    ("text perplexity", "ppl", "base_ppl", "drop_pct_inv_ppl"),
)


def _pm(text: Mapping[str, Any], key: str) -> str:
    """``value ± paired SE`` (unpaired SE in brackets) of a drop figure, in points."""
    value = text.get(key)
    if value is None:
        return "<span class='skipped'>not counted</span>"
    se, unpaired = text.get(f"{key}_se"), text.get(f"{key}_se_unpaired")
    return (f"{value:.1f}" + ("" if se is None else f" ± {se:.1f}")
            + ("" if unpaired is None else f" <span class='skipped'>(unpaired ± {unpaired:.1f})</span>"))


def text_drop_table(text: Mapping[str, Any]) -> str:
    """The text drop and its parts (the paper's shape: QA accuracy and perplexities), each drop with its paired
    standard error over held-out facts and, greyed, the unpaired one."""
    rows = ["<h2>Text ability vs the base LLM</h2><table><tr><th>part</th><th>model</th><th>base</th>"
            "<th>drop % ± paired SE</th></tr>"]
    for label, model, base, drop in TEXT_PARTS:
        rows.append(f"<tr><td>{label}</td><td>{_fmt(text.get(model))}</td><td>{_fmt(text.get(base))}</td>"
                    f"<td>{_pm(text, drop)}</td></tr>")
    rows.append(f"<tr><th>text drop (mean of the counted parts)</th><td></td><td></td><th>{_pm(text, 'drop_pct')}</th>"
                "</tr></table>")
    return "".join(rows)


def _fmt(value: Any) -> str:
    if value is None:
        return "<span class='skipped'>missing</span>"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
