"""The comparison's statistics and report on hand-made units: matched quality, the claim, spreads and errors,
the Markdown table and the SVG bands."""

from __future__ import annotations

import pytest

from deeptalk.evaluation import comparison_report as report
from deeptalk.evaluation.comparison_stats import claim, matched_quality, spread, summarise


def _unit(drops, wers, final_drop):
    curve = [{"phase": "p", "phase_step": i, "steps": 10 * i, "tokens": 0, "drop_pct": d, "qa_acc": 0.5,
              "answer_ppl": 2.0, "ppl": 9.0, "asr_wer": w} for i, (d, w) in enumerate(zip(drops, wers))]
    return {"curve": curve, "metrics": {"text": {"drop_pct": final_drop, "drop_pct_se": 1.0}},
            "train_wall_s": 1.0, "unit_wall_s": 2.0, "trainable_params": {"max": 1, "total_params": 2},
            "key": {"curve_every": 10}}


def test_matched_quality_takes_the_worst_best_wer_and_each_units_first_point_under_it():
    units = {"deeptalk": {0: _unit([0, 2, 4], [1.0, 0.5, 0.3], 4.0), 1: _unit([0, 1, 3], [1.0, 0.6, 0.4], 3.0)},
             "plain": {0: _unit([0, 10, 30], [1.0, 0.45, 0.2], 30.0), 1: _unit([0, 12, 20], [1.0, 0.7, 0.5], 20.0)}}
    matched = matched_quality(units)
    assert matched["target_asr_wer"] == 0.5  # plain seed 1 never gets below 0.5
    assert matched["systems"]["deeptalk"]["drop_pct"]["mean"] == pytest.approx((2 + 3) / 2)
    assert matched["systems"]["plain"]["drop_pct"]["mean"] == pytest.approx((10 + 20) / 2)
    summary = {"deeptalk": {"text drop %": spread([4.0, 3.0])},
               "plain": {"text drop %": spread([30.0, 20.0])}}
    assert claim(summary)["reproduced"] is True and claim(summary)["within_a_third"] is True
    noisy = {"deeptalk": {"text drop %": spread([4.0, 40.0])}, "plain": summary["plain"]}
    assert claim(noisy)["reproduced"] is False  # the gap is smaller than the seeds' spread
    assert claim({"deeptalk": summary["deeptalk"]})["reproduced"] is None
    one_seed = {"deeptalk": {"text drop %": spread([4.0])}, "plain": {"text drop %": spread([30.0])}}
    assert claim(one_seed)["reproduced"] is None and "one seed" in claim(one_seed)["statement"]


def test_report_renders_spread_errors_and_bands_from_units():
    units = {"deeptalk": {0: _unit([0, 2, 4], [1.0, 0.5, 0.3], 4.0), 1: _unit([0, 1, 3], [1.0, 0.6, 0.4], 3.0)},
             "plain": {0: _unit([0, 10, 30], [1.0, 0.45, 0.2], 30.0), 1: _unit([0, 12, 20], [1.0, 0.7, 0.5], 20.0)}}
    refs = {s: {"base": {"text": {"qa_acc": 0.6}}} for s in (0, 1)}
    result = {"profile": "tiny", "seeds": [0, 1], "command": "python -m flows compare --seeds 0,1", "commit": "abc",
              "machine": {"platform": "linux", "cpu_count": 2, "torch_threads": 2, "cuda": None}, "workspace": "w",
              "protocol": "same S1", "curve_every": 10, "wall_s": 12.0, "timings": {"data": {"wall_s": 1.0}, "seeds": {}},
              "units": units, **summarise(["deeptalk", "plain"], units, refs)}
    md = report.render_markdown(result)
    assert "| deeptalk | 3.5 ± 0.7 (se 1.0) |" in md and "| plain | 25.0 ± 7.1 (se 1.0) |" in md
    assert "ASR WER ≤ 0.500" in md and "reproduces" in md
    page = report.render_html(result)
    assert page.count("<polyline") == 4 and page.count("<polygon") == 4  # 2 plots x 2 systems, seeds as bands


def test_summary_carries_every_part_of_the_drop_with_its_paired_error():
    """Issue 20: the table reports the drop's parts (QA accuracy, answer and text perplexity), each with the
    held-out benchmark's paired standard error."""
    unit = _unit([0], [1.0], 4.0)
    unit["metrics"]["text"].update(drop_pct_inv_answer_ppl=12.0, drop_pct_inv_answer_ppl_se=0.5,
                                   drop_pct_inv_ppl=-3.0, drop_pct_inv_ppl_se=2.5)
    row = summarise(["deeptalk"], {"deeptalk": {0: unit}}, {})["summary"]["deeptalk"]
    assert row["answer ppl drop %"]["mean"] == 12.0 and row["answer ppl drop %"]["se"] == 0.5
    assert row["text ppl drop %"]["mean"] == -3.0 and row["text ppl drop %"]["se"] == 2.5
