"""The stage chain (one table) and the comparison's controls (issue 11): plain-staged, random-N, the S2a
ablations, the gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.model.switches import ParamGroup as G
from deeptalk.model.switches import RoutingMode
from deeptalk.profiling import random_like
from deeptalk.training import runner
from deeptalk.training.config import TrainingConfig
from deeptalk.training.stages import (
    ABLATION,
    ABLATION_PARTS,
    BACKBONE_ALL,
    BASELINES,
    BY_NAME,
    CHAIN,
    COMPARED_STAGES,
    DEEPTALK_STAGES,
    JOINT,
    SHARED,
    SPEECH_OUT,
    TEXT_OUT,
    Stage,
    get_stage,
    names,
)
from tests.training.helpers import save_tiny_model, tiny_cfg


def _all(cfg):
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, baselines=BASELINES))


def test_plain_staged_is_deeptalks_schedule_without_mask_or_freezing():
    cfg = _all(tiny_cfg(Path("/nonexistent")))
    ours, plain = [get_stage(s).phases[0] for s in ("s2a", "s2b", "s3")], get_stage(
        "plain-staged").phases
    assert [p.budget for p in plain] == [p.budget for p in ours] == ["s2a", "s2b", "s3"]
    assert [p.data for p in plain] == [p.data for p in ours] == [SPEECH_OUT, TEXT_OUT, JOINT]
    assert [runner.loop_config(p, cfg) for p in plain] == [runner.loop_config(p, cfg) for p in ours]
    assert all(p.routing is RoutingMode.NONE and p.trainable == BACKBONE_ALL for p in plain)
    assert [p.init_from for p in plain] == ["s1", "plain-staged/s2a", "plain-staged/s2b"]


@pytest.mark.parametrize("part", ABLATION_PARTS)
def test_each_ablation_freezes_exactly_one_shared_part_in_s2a_only(part):
    cfg = _all(tiny_cfg(Path("/nonexistent")))
    s2a, s2b, s3 = get_stage("s2a").phases[0], get_stage("s2b").phases[0], get_stage(
        "s3").phases[0]
    ablated = get_stage(f"s2a-frozen-{part}").phases
    missing = s2a.trainable - ablated[0].trainable
    assert len(missing) == 1 and ablated[0].trainable < s2a.trainable
    assert next(iter(missing)) in {G.EMBEDDINGS, G.SHARED_EXPERTS, G.ROUTERS, G.DENSE_LAYER0, G.NORMS}
    assert (ablated[1].trainable, ablated[2].trainable) == (s2b.trainable, s3.trainable)
    assert ablated[0].routing is s2a.routing and ablated[0].masked_gate == s2a.masked_gate == "served"


def test_renormalised_gate_ablation_and_bad_gate():
    cfg = _all(tiny_cfg(Path("/nonexistent")))
    phases = get_stage("renormalised-gate").phases
    assert [p.masked_gate for p in phases[:2]] == ["renormalised", "renormalised"]
    with pytest.raises(ValueError, match="unknown masked_gate"):
        dataclasses.replace(phases[0], masked_gate="renormalized")


def test_the_chain_is_one_ordered_table():
    """Steps, DVC, the flows, compare and the smoke script read the chain from CHAIN: names, steps and outputs are
    unique, every stage starts from the original LLM, an earlier stage or an earlier phase of its own."""
    assert [s.name for s in CHAIN[:5]] == ["text_pretrain", "s1", "s2a", "s2b", "s3"]
    assert names(SHARED) == ("text_pretrain", "s1") and DEEPTALK_STAGES == ("s2a", "s2b", "s3")
    assert COMPARED_STAGES == ("plain", "fixed", "moextend", "strict", "random", "plain-staged")
    assert BASELINES == COMPARED_STAGES + names(ABLATION) and len(names(ABLATION)) == 1 + len(ABLATION_PARTS)
    for column in ("name", "step", "out"):
        values = [getattr(s, column) for s in CHAIN]
        assert len(set(values)) == len(values), f"{column} repeats"
    assert (BY_NAME["s1"].step, BY_NAME["text_pretrain"].out, BY_NAME["s2a"].out) == (
        "align", "models/base", "models/stages/s2a")
    seen = {"new", "base"}
    for stage in CHAIN:
        assert stage.init_from in seen, f"{stage.name} starts from {stage.init_from}, not yet trained"
        seen |= {stage.name, *(p.name for p in stage.phases)}
    assert BY_NAME["fixed"].budgets == ("s2a", "s2b", "s3") and BY_NAME["plain"].budgets == ("plain",)
    assert TrainingConfig.for_profile("tiny").baselines == COMPARED_STAGES  # the profile compares the table
    with pytest.raises(ValueError, match="unknown role"):
        Stage("x", "sometimes", phases=CHAIN[2].phases)
    with pytest.raises(ValueError, match="unknown stage 's4'"):
        get_stage("s4")


def test_random_split_has_the_profiled_counts_and_follows_the_seed(tmp_path):
    cfg = _all(tiny_cfg(tmp_path))
    profiled = ExpertSplit([[0, 1, 5], [2, 3, 4, 7]])
    profiled.to_json(cfg.paths.expert_split)
    model = save_tiny_model(cfg, cfg.paths.stage("s1"))
    plan = get_stage("random")
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
    plan = get_stage("s2a")
    runner.train_phase(plan.phases[0], plan, cfg, distributed.init(), synthetic_batches(cfg), LAYOUT, "synthetic")
    snaps = runner.snapshot_dir(cfg, plan.phases[0])
    assert sorted(p.name for p in snaps.iterdir()) == ["step000002"]
    mid, end = SpeechLM.from_pretrained(snaps / "step000002"), SpeechLM.from_pretrained(cfg.paths.stage("s2a"))
    assert any(not torch.equal(a, b) for a, b in zip(mid.state_dict().values(), end.state_dict().values()))
    with pytest.raises(ValueError, match="curve_every must be >= 0"):
        dataclasses.replace(cfg.training, curve_every=-1)
