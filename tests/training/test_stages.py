"""Stage plans of the comparison's controls (issue 11): plain-staged, random-N, the S2a ablations, the gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from deeptalk.model.experts import ExpertSplit, RoutingMode
from deeptalk.model.freezing import ParamGroup as G
from deeptalk.profiling import random_like
from deeptalk.training import runner
from deeptalk.training.config import ABLATION_PARTS, ABLATIONS, BASELINES, COMPARED
from deeptalk.training.stages import BACKBONE_ALL, JOINT, SPEECH_OUT, TEXT_OUT, get_plan, stage_plans
from tests.training.helpers import save_tiny_model, tiny_cfg


def _all(cfg):
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, baselines=BASELINES))


def test_plain_staged_is_deeptalks_schedule_without_mask_or_freezing():
    cfg = _all(tiny_cfg(Path("/nonexistent")))
    ours, plain = [get_plan(s, cfg.training).phases[0] for s in ("s2a", "s2b", "s3")], get_plan(
        "plain-staged", cfg.training).phases
    assert [p.budget for p in plain] == [p.budget for p in ours] == ["s2a", "s2b", "s3"]
    assert [p.data for p in plain] == [p.data for p in ours] == [SPEECH_OUT, TEXT_OUT, JOINT]
    assert [runner.loop_config(p, cfg) for p in plain] == [runner.loop_config(p, cfg) for p in ours]
    assert all(p.routing is RoutingMode.NONE and p.trainable == BACKBONE_ALL for p in plain)
    assert [p.init_from for p in plain] == ["s1", "plain-staged/s2a", "plain-staged/s2b"]


@pytest.mark.parametrize("part", ABLATION_PARTS)
def test_each_ablation_freezes_exactly_one_shared_part_in_s2a_only(part):
    cfg = _all(tiny_cfg(Path("/nonexistent")))
    s2a, s2b, s3 = get_plan("s2a", cfg.training).phases[0], get_plan("s2b", cfg.training).phases[0], get_plan(
        "s3", cfg.training).phases[0]
    ablated = get_plan(f"s2a-frozen-{part}", cfg.training).phases
    missing = s2a.trainable - ablated[0].trainable
    assert len(missing) == 1 and ablated[0].trainable < s2a.trainable
    assert next(iter(missing)) in {G.EMBEDDINGS, G.SHARED_EXPERTS, G.ROUTERS, G.DENSE_LAYER0, G.NORMS}
    assert (ablated[1].trainable, ablated[2].trainable) == (s2b.trainable, s3.trainable)
    assert ablated[0].routing is s2a.routing and ablated[0].masked_gate == s2a.masked_gate == "served"


def test_renormalised_gate_ablation_and_bad_gate():
    cfg = _all(tiny_cfg(Path("/nonexistent")))
    phases = get_plan("renormalised-gate", cfg.training).phases
    assert [p.masked_gate for p in phases[:2]] == ["renormalised", "renormalised"]
    with pytest.raises(ValueError, match="unknown masked_gate"):
        dataclasses.replace(phases[0], masked_gate="renormalized")


def test_every_baseline_and_ablation_is_a_plan_and_the_default_is_the_table():
    cfg = tiny_cfg(Path("/nonexistent"))
    assert set(BASELINES) == set(COMPARED) | set(ABLATIONS)
    assert set(BASELINES) <= set(stage_plans(cfg.training))
    assert next(f.default for f in dataclasses.fields(type(cfg.training)) if f.name == "baselines") == COMPARED
    with pytest.raises(ValueError, match="unknown baseline"):
        dataclasses.replace(cfg.training, baselines=("plain", "random-4"))


def test_random_split_has_the_profiled_counts_and_follows_the_seed(tmp_path):
    cfg = _all(tiny_cfg(tmp_path))
    profiled = ExpertSplit([[0, 1, 5], [2, 3, 4, 7]])
    profiled.to_json(cfg.paths.expert_split)
    model = save_tiny_model(cfg, cfg.paths.stage("s1"))
    plan = get_plan("random", cfg.training)
    splits = [runner.resolve_split(plan.phases[0], dataclasses.replace(cfg, seed=s), model) for s in (0, 0, 1, 2, 3)]
    assert [len(layer) for layer in splits[0].speech] == [3, 4]
    assert splits[0] == splits[1]
    assert len({tuple(map(tuple, s.speech)) for s in splits}) > 1, "the seed must change the draw"
    with pytest.raises(ValueError, match="between 1 and 7"):
        random_like([3, 8], 8, seed=0)


def test_curve_snapshots_are_usable_weights_between_the_steps(tmp_path):
    """``training.curve_every`` exports the weights every N steps (not the last: that is the phase output)."""
    from deeptalk.model.speech_lm import SpeechLM
    from deeptalk.training import distributed
    from tests.training.helpers import LAYOUT, synthetic_batches

    cfg = tiny_cfg(tmp_path, steps=4)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, curve_every=2))
    save_tiny_model(cfg, cfg.paths.stage("s1"))
    ExpertSplit([[0, 1, 5], [2, 3, 4, 7]]).to_json(cfg.paths.expert_split)
    plan = get_plan("s2a", cfg.training)
    runner.train_phase(plan.phases[0], plan, cfg, distributed.init(), synthetic_batches(cfg), LAYOUT, "synthetic")
    snaps = runner.snapshot_dir(cfg, plan.phases[0])
    assert sorted(p.name for p in snaps.iterdir()) == ["step000002"]
    mid, end = SpeechLM.from_pretrained(snaps / "step000002"), SpeechLM.from_pretrained(cfg.paths.stage("s2a"))
    assert any(not torch.equal(a, b) for a, b in zip(mid.state_dict().values(), end.state_dict().values()))
    with pytest.raises(ValueError, match="curve_every must be >= 0"):
        dataclasses.replace(cfg.training, curve_every=-1)
