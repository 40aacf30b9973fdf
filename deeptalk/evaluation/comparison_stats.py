"""The comparison's statistics: spreads over seeds, matched speech quality and the paper's claim, from the
units' results (plain dicts, as ``flows.comparison`` stores them). Definitions: README "The paper's comparison"."""

from __future__ import annotations

import math
import statistics
from typing import Any


METRICS = (  # (name, path in a unit's metrics, format, path of its standard error)
    ("text drop %", ("text", "drop_pct"), "{:.1f}", ("text", "drop_pct_se")),
    ("QA drop %", ("text", "drop_pct_qa_acc"), "{:.1f}", ("text", "drop_pct_qa_acc_se")),
    ("answer ppl drop %", ("text", "drop_pct_inv_answer_ppl"), "{:.1f}", ("text", "drop_pct_inv_answer_ppl_se")),
    ("text ppl drop %", ("text", "drop_pct_inv_ppl"), "{:.1f}", ("text", "drop_pct_inv_ppl_se")),
    ("text QA acc", ("text", "qa_acc"), "{:.3f}", ("text", "qa_acc_se")),
    ("answer ppl", ("text", "answer_ppl"), "{:.2f}", ("text", "answer_ppl_se")),
    ("text ppl", ("text", "ppl"), "{:.1f}", ("text", "ppl_se")),
    ("ASR WER", ("asr", "wer"), "{:.3f}", None),
    ("spoken QA s→t", ("spoken_qa", "s2t_acc"), "{:.3f}", None),
    ("distinct answers", ("spoken_qa", "distinct_answers"), "{:.1f}", None),
    ("TTS WER", ("tts", "wer_vs_truth"), "{:.3f}", None),
)


def _get(metrics: dict, path: tuple[str, str] | None) -> float | None:
    if path is None:
        return None
    value = metrics.get(path[0], {}).get(path[1])
    return None if value is None else float(value)


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max over seeds (None values dropped)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def matched_quality(units: dict[str, dict[int, dict]]) -> dict[str, Any]:
    """The ASR-WER target every unit reaches (the largest per-unit minimum over its curve) and each unit's
    text-drop figures at its first curve point at or below it."""
    minima = [min(p["asr_wer"] for p in u["curve"] if p["asr_wer"] is not None)
              for per_seed in units.values() for u in per_seed.values()
              if any(p["asr_wer"] is not None for p in u["curve"])]
    if not minima:
        return {"target_asr_wer": None, "systems": {}}
    target = max(minima)
    out: dict[str, Any] = {}
    for name, per_seed in units.items():
        at = {}
        for seed, unit in per_seed.items():
            hit = next((p for p in unit["curve"] if p["asr_wer"] is not None and p["asr_wer"] <= target + 1e-12), None)
            at[seed] = hit
        out[name] = {"per_seed": at, **{k: spread([p[k] if p else None for p in at.values()])
                                        for k in ("drop_pct", "qa_acc", "answer_ppl", "ppl", "steps")}}
    return {"target_asr_wer": target, "systems": out}


def claim(summary: dict[str, dict]) -> dict[str, Any]:
    """The paper's expectation: DeepTalk's text drop is smaller than the plain fine-tune's, and ≤ ⅓ of it,
    with the seeds' spread smaller than the gap (means over seeds at end of training)."""
    ours, plain = summary.get("deeptalk", {}).get("text drop %"), summary.get("plain", {}).get("text drop %")
    if not ours or not plain or ours["mean"] is None or plain["mean"] is None:
        return {"reproduced": None, "statement": "not decidable: DeepTalk's or plain's text drop is missing"}
    gap = plain["mean"] - ours["mean"]
    if ours["n"] < 2 or plain["n"] < 2:
        return {"deeptalk_drop_pct": ours["mean"], "plain_drop_pct": plain["mean"], "gap": gap, "seed_sd": None,
                "reproduced": None, "within_a_third": None,
                "statement": (f"DeepTalk's text drop ({ours['mean']:.1f} %) vs the plain fine-tune's "
                              f"({plain['mean']:.1f} %) from one seed: no spread to judge the gap against, so "
                              "the claim is not decided (run >= 2 seeds; 3 for the table).")}
    noise = max(ours["sd"] or 0.0, plain["sd"] or 0.0)
    held = gap > 0 and gap > noise
    third = ours["mean"] <= plain["mean"] / 3 if plain["mean"] > 0 else False
    return {"deeptalk_drop_pct": ours["mean"], "plain_drop_pct": plain["mean"], "gap": gap, "seed_sd": noise,
            "reproduced": held, "within_a_third": third,
            "statement": (f"DeepTalk's text drop ({ours['mean']:.1f} %) is "
                          f"{'smaller' if gap > 0 else 'NOT smaller'} than the plain fine-tune's "
                          f"({plain['mean']:.1f} %); gap {gap:.1f} points vs seed spread (sd) {noise:.1f}: the "
                          f"paper's claim {'reproduces' if held else 'does not reproduce'} here"
                          f"{' (and is within a third of plain)' if third else ''}.")}


def summarise(systems: list[str], units: dict[str, dict[int, dict]], references: dict[int, dict]) -> dict[str, Any]:
    """Per system (in ``systems`` order) the spread of every metric over its seeds, with the held-out benchmark's
    standard error; matched quality; the claim; the base's held-out QA."""
    summary: dict[str, dict] = {}
    for name in systems:
        per_seed = units.get(name, {})
        if not per_seed:
            continue
        row: dict[str, Any] = {}
        for label, path, _, se_path in METRICS:
            row[label] = spread([_get(u["metrics"], path) for u in per_seed.values()])
            row[label]["se"] = spread([_get(u["metrics"], se_path) for u in per_seed.values()])["mean"]
        row["train_wall_s"] = spread([u["train_wall_s"] for u in per_seed.values()])
        row["unit_wall_s"] = spread([u["unit_wall_s"] for u in per_seed.values()])
        row["trainable_params"] = next(iter(per_seed.values()))["trainable_params"]
        summary[name] = row
    return {"summary": summary, "matched": matched_quality(units), "claim": claim(summary),
            "base_qa_acc": spread([r["base"]["text"].get("qa_acc") for r in references.values()])}
