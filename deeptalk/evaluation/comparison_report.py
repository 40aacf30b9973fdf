"""The comparison's report as Markdown, a self-contained HTML page (no scripts, nothing from the network) and
the curves as inline SVG, from the result dict ``flows.comparison`` builds (statistics:
``deeptalk.evaluation.comparison_stats``)."""

from __future__ import annotations

import html
import json
import os
import statistics
from pathlib import Path
from typing import Any

from deeptalk.evaluation.comparison_stats import METRICS


def _fmt(stat: dict[str, Any], fmt: str) -> str:
    if stat.get("mean") is None:
        return "—"
    text = fmt.format(stat["mean"])
    if stat.get("sd") is not None:
        text += " ± " + fmt.format(stat["sd"])
    if stat.get("se") is not None:
        text += f" (se {fmt.format(stat['se'])})"
    return text


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [["system", *[m[0] for m in METRICS], "trainable / total params", "train s / seed"]]
    for name, row in result["summary"].items():
        params = row["trainable_params"]
        rows.append([name, *[_fmt(row[m[0]], m[2]) for m in METRICS],
                     f"{params['max']:,} / {params['total_params']:,}", _fmt(row["train_wall_s"], "{:.0f}")])
    return rows


def matched_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [["system", "text drop % at target", "QA acc", "answer ppl", "text ppl", "speech steps to target"]]
    for name, row in result["matched"]["systems"].items():
        rows.append([name, _fmt(row["drop_pct"], "{:.1f}"), _fmt(row["qa_acc"], "{:.3f}"),
                     _fmt(row["answer_ppl"], "{:.2f}"), _fmt(row["ppl"], "{:.1f}"), _fmt(row["steps"], "{:.0f}")])
    return rows


def _md_table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0]), *["| " + " | ".join(r) + " |" for r in rows[1:]]]


def _timing_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"- data chain (once): {result['timings']['data'].get('wall_s', 0):.0f} s"]
    for seed, t in result["timings"]["seeds"].items():
        lines.append(f"- seed {seed}: base + S1 + profiling {t['shared_wall_s']:.0f} s "
                     f"({', '.join(f'{k} {v}' for k, v in t['steps'].items())})")
    for name, row in result["summary"].items():
        units = list(result["units"][name].values())
        parts = {k: statistics.fmean(u.get(k, 0.0) for u in units) for k in ("train_call_s", "curve_eval_s",
                                                                            "final_eval_s", "curve_points")}
        lines.append(f"- {name}: {_fmt(row['unit_wall_s'], '{:.0f}')} s per unit: training {parts['train_call_s']:.0f} s, "
                     f"curve {parts['curve_eval_s']:.0f} s ({parts['curve_points']:.0f} points), final evaluation "
                     f"{parts['final_eval_s']:.0f} s")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    target = result["matched"]["target_asr_wer"]
    lines = [
        f"# DeepTalk comparison ({result['profile']} profile, seeds {', '.join(map(str, result['seeds']))})", "",
        f"Command: `{result['command']}`  ", f"Commit: `{result['commit']}`  ",
        f"Machine: {result['machine']['platform']}, {result['machine']['cpu_count']} CPUs, "
        f"{result['machine']['torch_threads']} torch threads, GPU: {result['machine']['cuda'] or 'none'}  ",
        f"Wall time: {result['wall_s']:.0f} s (workspace `{result['workspace']}`)", "",
        f"Protocol: {result['protocol']}.", "",
        f"**{result['claim']['statement']}**", "",
        "## End of training (mean ± sd over seeds; se = the held-out benchmark's standard error, mean over seeds)",
        "", *_md_table(table_rows(result)), "",
        f"Base held-out text QA: {_fmt(result['base_qa_acc'], '{:.3f}')}.", "",
        "## At matched speech quality",
        "", (f"Target: held-out ASR WER ≤ {target:.3f} (the best WER every unit reaches); each unit's first curve "
             "point at or below it." if target is not None else "No ASR WER on the curves: nothing to match."), "",
        *(_md_table(matched_rows(result)) if target is not None else []), "",
        f"Curve: every {result['curve_every']} steps of each phase (`reports/compare.html`).", "",
        "## Wall time", "", *_timing_lines(result), "",
        "Definitions: text drop % = mean over {held-out typed QA accuracy (when the base answers at least 5), "
        "1/answer perplexity, 1/text perplexity} of (base − model) / base × 100 against the seed's own "
        "text-pretrained base, text-only mode (`deeptalk/evaluation/text_ability.py`). QA drop % is that "
        "mean's QA part alone. Spoken QA: reference contained in the streamed text answer to a held-out spoken "
        "question in a held-out voice. ASR / TTS WER: held-out voices; TTS against the ground-truth sentence.", "",
    ]
    return "\n".join(lines)


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22", "#393b79", "#637939", "#843c39")


def _series(units: dict[int, dict], x_key: str) -> list[tuple[float, float, float, float]]:
    """(mean x, mean drop, min drop, max drop) per curve point index over the seeds that have that point."""
    curves = [u["curve"] for u in units.values()]
    out = []
    for i in range(max((len(c) for c in curves), default=0)):
        pts = [c[i] for c in curves if i < len(c) and c[i][x_key] is not None and c[i]["drop_pct"] is not None]
        if pts:
            ys = [p["drop_pct"] for p in pts]
            out.append((statistics.fmean(p[x_key] for p in pts), statistics.fmean(ys), min(ys), max(ys)))
    return out


def curve_svg(result: dict[str, Any], x_key: str, x_label: str, width: int = 720, height: int = 420) -> str:
    """Text drop (y) against ``x_key`` per system: a line through the seeds' mean, a band from their min to max."""
    series = {name: _series(units, x_key) for name, units in result["units"].items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return "<p>No curve points yet.</p>"
    xs = [p[0] for s in series.values() for p in s]
    ys = [y for s in series.values() for p in s for y in p[1:]]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys + [0.0]), max(ys + [0.0])
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 60, 170, 20, 50

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    e = html.escape
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11' "
             f"font-family='sans-serif'><rect width='{width}' height='{height}' fill='white'/>",
             f"<line x1='{left}' y1='{sy(0):.1f}' x2='{width - right}' y2='{sy(0):.1f}' stroke='#bbb' "
             "stroke-dasharray='4 3'/>"]
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f"<text x='{sx(xv):.1f}' y='{height - bottom + 15}' text-anchor='middle'>{xv:.3g}</text>")
        parts.append(f"<text x='{left - 5}' y='{sy(yv) + 4:.1f}' text-anchor='end'>{yv:.3g}</text>")
    parts.append(f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='black'/>"
                 f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='black'/>")
    parts.append(f"<text x='{(left + width - right) / 2}' y='{height - 12}' text-anchor='middle'>{e(x_label)}</text>"
                 f"<text x='14' y='{(top + height - bottom) / 2}' transform='rotate(-90 14 {(top + height - bottom) / 2})'"
                 " text-anchor='middle'>text drop % (seeds' mean; band: min–max)</text>")
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        band = [f"{sx(x):.1f},{sy(hi):.1f}" for x, _, _, hi in pts] + [
            f"{sx(x):.1f},{sy(lo):.1f}" for x, _, lo, _ in reversed(pts)]
        parts.append(f"<polygon points='{' '.join(band)}' fill='{colour}' fill-opacity='0.15' stroke='none'/>")
        line = " ".join(f"{sx(x):.1f},{sy(m):.1f}" for x, m, _, _ in pts)
        parts.append(f"<polyline points='{line}' fill='none' stroke='{colour}' stroke-width='2'>"
                     f"<title>{e(name)}</title></polyline>")
        parts.extend(f"<circle cx='{sx(x):.1f}' cy='{sy(m):.1f}' r='2.5' fill='{colour}'/>" for x, m, _, _ in pts)
        parts.append(f"<rect x='{width - right + 12}' y='{top + 16 * i}' width='12' height='3' fill='{colour}'/>"
                     f"<text x='{width - right + 28}' y='{top + 16 * i + 5}'>{e(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def render_html(result: dict[str, Any]) -> str:
    """Self-contained page (no scripts, nothing from the network): claim, tables, the two curves."""
    e = html.escape

    def table(rows: list[list[str]]) -> str:
        return "<table>" + "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{e(c)}</{'th' if i == 0 else 'td'}>"
                                                    for c in row) + "</tr>" for i, row in enumerate(rows)) + "</table>"

    target = result["matched"]["target_asr_wer"]
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>DeepTalk comparison</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 8px}"
        "table{border-collapse:collapse}</style></head><body>",
        f"<h1>DeepTalk comparison ({e(result['profile'])}, seeds {e(', '.join(map(str, result['seeds'])))})</h1>",
        f"<p><code>{e(result['command'])}</code> at <code>{e(str(result['commit']))}</code>, "
        f"{result['wall_s']:.0f} s wall. {e(result['protocol'])}.</p>",
        f"<p><b>{e(result['claim']['statement'])}</b></p>",
        "<h2>Retention vs speech quality</h2>",
        curve_svg(result, "asr_wer", "held-out ASR WER (← better speech)"),
        "<h2>Retention over speech training</h2>",
        curve_svg(result, "steps", "speech-training optimizer steps"),
        "<h2>End of training (mean ± sd over seeds, se of the held-out benchmark)</h2>", table(table_rows(result)),
        "<h2>At matched speech quality</h2>",
        (f"<p>Target held-out ASR WER ≤ {target:.3f}.</p>" + table(matched_rows(result))) if target is not None
        else "<p>No ASR WER on the curves.</p>",
        "<h2>Wall time</h2><ul>" + "".join(f"<li>{e(line[2:])}</li>" for line in _timing_lines(result)) + "</ul>",
        "</body></html>",
    ])


def write_reports(reports: str | Path, result: dict[str, Any]) -> None:
    """``compare.json``, ``compare.md`` and ``compare.html`` in ``reports``, each replaced atomically."""
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    for name, text in (("compare.json", json.dumps(result, indent=1, default=str) + "\n"),
                       ("compare.md", render_markdown(result)), ("compare.html", render_html(result))):
        tmp = reports / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, reports / name)
