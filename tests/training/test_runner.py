"""The stage runner on a tiny speech LM with a real DeepSpeed engine (gloo, one process)."""

from __future__ import annotations

import json

import pytest
import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.model.speech_lm import SpeechLM
from deeptalk.training import distributed, runner
from deeptalk.training.stages import get_stage
from tests.training.helpers import LAYOUT, save_tiny_model, synthetic_batches, tiny_cfg

SPLIT = ExpertSplit([[0, 1, 5], [2, 3, 4, 7]])


def _experts(model: SpeechLM) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [(m.experts.gate_up_proj.detach().clone(), m.experts.down_proj.detach().clone(),
             m.router.weight.detach().clone()) for m in model.moe_layers()]


def _phase(cfg, name):
    plan = get_stage(name)
    return runner.train_phase(plan.phases[0], plan, cfg, distributed.init(), synthetic_batches(cfg, seed=3),
                              LAYOUT, "synthetic")


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """s1 (saved tiny model) → s2a → s2b, trained once for the tests below."""
    root = tmp_path_factory.mktemp("stages")
    cfg = tiny_cfg(root, steps=4)
    save_tiny_model(cfg, cfg.paths.stage("s1"))
    SPLIT.to_json(cfg.paths.expert_split)
    summaries = {name: _phase(cfg, name) for name in ("s2a", "s2b")}
    models = {name: SpeechLM.from_pretrained(cfg.paths.stage(name)) for name in ("s1", "s2a", "s2b")}
    return cfg, models, summaries


def _rows(split: ExpertSplit, layer: int, n: int, speech: bool) -> list[int]:
    return list(split.speech_experts(layer)) if speech else list(split.text_experts(layer, n))


@pytest.mark.parametrize(("stage", "before", "frozen_speech"), [("s2a", "s1", False), ("s2b", "s2a", True)])
def test_single_modality_stage_leaves_other_experts_bit_identical(staged, stage, before, frozen_speech):
    _, models, _ = staged
    old, new = _experts(models[before]), _experts(models[stage])
    for layer, ((gu0, d0, _), (gu1, d1, _)) in enumerate(zip(old, new, strict=True)):
        frozen = _rows(SPLIT, layer, gu0.shape[0], speech=frozen_speech)
        trained = _rows(SPLIT, layer, gu0.shape[0], speech=not frozen_speech)
        assert torch.equal(gu0[frozen], gu1[frozen]) and torch.equal(d0[frozen], d1[frozen]), f"layer {layer}"
        assert not torch.equal(gu0[trained], gu1[trained]), f"layer {layer}: trained experts did not move"


def test_moe_attention_frozen_but_shared_parts_train_in_s2a(staged):
    _, models, _ = staged
    old, new = models["s1"], models["s2a"]
    for moe in old.moe_layers():
        layer_old = old.backbone.model.layers[moe.layer_idx]
        layer_new = new.backbone.model.layers[moe.layer_idx]
        for (name, p0), p1 in zip(layer_old.self_attn.named_parameters(), layer_new.self_attn.parameters()):
            assert torch.equal(p0, p1), f"layer {moe.layer_idx} attention {name} moved"
    assert not torch.equal(old.backbone.model.layers[0].mlp.gate_proj.weight,
                           new.backbone.model.layers[0].mlp.gate_proj.weight), "dense layer 0 trains in S2a"


def test_s2a_routing_never_selects_a_text_expert(staged):
    cfg, _, _ = staged
    records = [json.loads(line) for line in (cfg.paths.stage("s2a") / "metrics.jsonl").read_text().splitlines()]
    assert records and all("expert_load" in r for r in records)
    for r in records:
        for modality, data in r["expert_load"].items():
            assert data["positions"] > 0, modality
            for layer, shares in enumerate(data["share"]):
                text = SPLIT.text_experts(layer, len(shares))
                assert all(shares[e] == 0 for e in text), f"{modality} layer {layer}: {shares}"
                assert sum(shares) == pytest.approx(1.0, abs=1e-3)  # shares are rounded to 4 decimals


def test_stage_outputs_and_skip_when_already_trained(staged, caplog):
    cfg, _, summaries = staged
    out = cfg.paths.stage("s2a")
    for name in ("speech_lm.json", "expert_split.json", "train_summary.json", "metrics.jsonl",
                 "plots/loss.csv", "plots/expert_load.csv"):
        assert (out / name).is_file(), name
    s = summaries["s2a"]
    assert s["tokens_per_s"] > 0 and s["peak_rss_mb"] > 0 and s["wall_s"] > 0
    assert ExpertSplit.from_json(out / "expert_split.json") == SPLIT
    assert "routing" not in (out / "speech_lm.json").read_text(), "stage choices stay out of the checkpoint"
    with caplog.at_level("INFO", logger="deeptalk.training.runner"):
        again = _phase(cfg, "s2a")
    assert "already trained" in caplog.text and again["fingerprint"] == s["fingerprint"]


def test_s1_trains_only_new_rows_projector_and_encoder(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=2, checkpoint_every=2)
    base = save_tiny_model(cfg, cfg.paths.base)
    _phase(cfg, "s1")
    s1 = SpeechLM.from_pretrained(cfg.paths.stage("s1"))
    old_rows = LAYOUT.text_vocab_size
    w0, w1 = base.embed_tokens.weight.detach(), s1.embed_tokens.weight.detach()
    assert torch.equal(w0[:old_rows], w1[:old_rows])
    assert not torch.equal(w0[old_rows:], w1[old_rows:])
    for (name, p0), p1 in zip(base.backbone.model.layers.named_parameters(), s1.backbone.model.layers.parameters()):
        assert torch.equal(p0, p1), f"backbone {name} moved in S1"
    assert any(not torch.equal(a, b) for a, b in zip(base.projector.parameters(), s1.projector.parameters()))


def test_every_plan_resolves_budgets_and_inits():
    cfg = tiny_cfg(__import__("pathlib").Path("/nonexistent"))
    from deeptalk.training.stages import BY_NAME as plans

    assert set(plans) >= {"text_pretrain", "s1", "s2a", "s2b", "s3", "plain", "fixed", "moextend", "strict"}
    for plan in plans.values():
        for i, spec in enumerate(plan.phases):
            runner.loop_config(spec, cfg)
            if i:
                assert spec.init_from == plan.phases[i - 1].name
    with pytest.raises(ValueError, match="unknown stage"):
        get_stage("s4")


def test_a_changed_split_file_changes_the_settings_fingerprint(tmp_path):
    cfg = tiny_cfg(tmp_path)
    plan = get_stage("s2a")
    spec = plan.phases[0]
    loop = runner.loop_config(spec, cfg)
    path = tmp_path / "split.json"
    prints = []
    for split in (SPLIT, ExpertSplit([[0, 1, 6], [2, 3, 4, 7]])):
        split.to_json(path)
        prints.append(runner.fingerprint(spec, loop, cfg, None, {"split": runner._dir_signature(path)}))
    assert prints[0] != prints[1]
