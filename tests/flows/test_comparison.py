"""The comparison end to end on a miniature project, nothing replaced: the data chain and each seed's base, S1
and expert split through the step registry, EVERY baseline and ablation trained for two real steps through the
runner (DeepSpeed, one process), curve snapshots evaluated, the reports written, and a second run reusing every
unit (statistics, matching and rendering on hand-made units: tests/evaluation/test_comparison_stats.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from deeptalk.config import load_config
from flows import comparison as compare
from deeptalk.training.stages import BASELINES

TINY_MODEL = {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "n_routed_experts": 8, "num_experts_per_tok": 2,
              "moe_intermediate_size": 16, "intermediate_size": 64, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
              "qk_rope_head_dim": 8, "v_head_dim": 8}
BUDGET = {"steps": 2, "batch_size": 2, "lr": 1e-3, "max_len": 96}
OVERRIDES = {
    "data": {"counts": {"asr": [6, 1, 2], "tts": [4, 1, 1], "aqa": [4, 1, 2], "tqa": [4, 1, 2], "rqa": [4, 1, 2]},
             "max_facts": 40, "workers": 1},
    "codec": {"codebook_size": 32, "kmeans_iters": 2, "kmeans_max_frames": 2000},
    "model": TINY_MODEL,
    "training": {**{s: BUDGET for s in ("text_pretrain", "s1", "s2a", "s2b", "s3", "plain")},
                 "checkpoint_every": 2, "log_every": 1, "profile_batches": 1, "eval_batches": 1},
    "evaluation": {"max_text_qa": 2, "max_ppl_samples": 2, "max_spoken_qa": 1, "distinct_questions": 1, "max_asr": 1,
                   "max_tts": 1, "max_latency": 0, "max_answer_tokens": 3, "max_audio_frames": 4},
}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    cfg = load_config(root / "params.yaml", profile="tiny", root=root, overrides=OVERRIDES)
    result = compare.run_compare(cfg, seeds=[0], systems=list(BASELINES), curve_every=1)
    return cfg, result


def test_every_system_is_trained_evaluated_and_reported(compared):
    cfg, result = compared
    assert set(result["summary"]) == {"deeptalk", *BASELINES}
    seed0 = compare.compare_root(cfg) / "seed0"
    for name in ("deeptalk", *BASELINES):
        unit = result["units"][name]["0"]
        assert unit["metrics"]["text"]["drop_pct"] is not None, name
        assert unit["metrics"]["text"]["qa_acc_se"] is not None, name
        assert unit["trainable_params"]["max"] > 0
        assert all(p["steps"] == 2 for p in unit["phases"].values()), (name, unit["phases"])
        # curve: S1, then per phase the snapshot after step 1 and the phase output; snapshot weights are gone
        assert [p["phase_step"] for p in unit["curve"]] == [0] + [1, 2] * len(unit["phases"]), name
        assert all(p["asr_wer"] is not None and p["drop_pct"] is not None for p in unit["curve"]), name
        assert (seed0 / "units" / f"{name}.json").is_file()
    assert not any((seed0 / "models" / "snapshots").rglob("speech_lm.json"))
    assert (seed0 / "data").is_symlink() and (seed0 / "models" / "base" / "speech_lm.json").is_file()
    plain_staged = result["units"]["plain-staged"]["0"]["phases"]
    assert list(plain_staged) == ["plain-staged/s2a", "plain-staged/s2b", "plain-staged/s3"]
    assert result["matched"]["target_asr_wer"] is not None
    md = (cfg.paths.reports / "compare.md").read_text()
    assert "python -m flows compare --profile tiny --seeds 0" in md and "| random |" in md and "(se " in md
    page = (cfg.paths.reports / "compare.html").read_text()
    assert page.count("<polyline") == 2 * (1 + len(BASELINES)) and "http" not in page.replace(
        "http://www.w3.org/2000/svg", "")
    assert json.loads((cfg.paths.reports / "compare.json").read_text())["claim"] == result["claim"]


def test_a_second_run_reuses_every_unit(compared):
    """Nothing is recomputed when nothing changed (the shared tree's code is part of every record: edit a
    deeptalk file between the runs and the steps that import it run again, as they should)."""
    cfg, first = compared
    again = compare.run_compare(cfg, seeds=[0], systems=["plain", "random"], curve_every=1)
    assert set(again["timings"]["data"]["steps"].values()) == {"cached"}
    assert set(again["timings"]["seeds"][0]["steps"].values()) == {"cached"}
    for name in ("deeptalk", "plain", "random"):
        assert again["units"][name]["0"] == first["units"][name]["0"]  # the stored unit, not a re-evaluation


def test_bad_seeds_and_systems_are_refused(tmp_path):
    cfg = load_config(tmp_path / "params.yaml", profile="tiny", root=tmp_path)
    for seeds in ([], [0, 0], [-1]):
        with pytest.raises(ValueError, match="seeds must be distinct"):
            compare.Comparison(cfg, seeds)
    with pytest.raises(ValueError, match="unknown system"):
        compare.Comparison(cfg, [0], ["plain", "gpt4"])
    typo = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, baselines=("plain", "random-4")))
    with pytest.raises(ValueError, match=r"unknown system\(s\) \['random-4'\]"):  # params.yaml's list, checked first
        compare.Comparison(typo, [0])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()  # nothing written
