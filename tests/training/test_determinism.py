"""Same seed, same thread count → bit-identical weights (issue 11: results must not move with the load)."""

from __future__ import annotations

import dataclasses

import torch

from deeptalk import runtime
from deeptalk.model.experts import ExpertSplit
from deeptalk.model.speech_lm import SpeechLM
from deeptalk.training import distributed, runner
from deeptalk.training.stages import get_stage
from tests.training.helpers import LAYOUT, save_tiny_model, synthetic_batches, tiny_cfg


def _train_s2a(root, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(S1 weights, S2a weights) of a 4-step S2a run."""
    cfg = dataclasses.replace(tiny_cfg(root, steps=4), seed=seed)
    start = save_tiny_model(cfg, cfg.paths.stage("s1")).state_dict()
    ExpertSplit([[0, 1, 5], [2, 3, 4, 7]]).to_json(cfg.paths.expert_split)
    plan = get_stage("s2a")
    torch.manual_seed(cfg.seed)
    runner.train_phase(plan.phases[0], plan, cfg, distributed.init(), synthetic_batches(cfg, seed=seed), LAYOUT,
                       "synthetic")
    return start, SpeechLM.from_pretrained(cfg.paths.stage("s2a")).state_dict()


def test_two_runs_with_the_same_seed_and_threads_give_bit_identical_weights(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("DEEPTALK_THREADS", raising=False)
    try:
        threads = runtime.setup_threads()  # the training default: fixed, whatever the load
        assert threads == runtime.default_threads()
        (start, first), (_, second) = _train_s2a(tmp_path / "a", 0), _train_s2a(tmp_path / "b", 0)
    finally:
        torch.set_num_threads(before)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"same seed, different weights: {different[:5]}"
    assert any(not torch.equal(first[k], start[k]) for k in first), "S2a must have trained something"
