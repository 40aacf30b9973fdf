"""ExpertSplit validation and JSON, routing masks (recorded router decisions), router recording."""

from __future__ import annotations

import pytest
import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.model.switches import RoutingMode
from deeptalk.model.speech_lm import SpeechLM

from .conftest import build_tiny, random_batch, tiny_config

SPLIT = ExpertSplit([[0, 2, 4, 6], [1, 3, 5]])


def test_json_round_trip(tmp_path):
    path = tmp_path / "split.json"
    SPLIT.to_json(path)
    assert ExpertSplit.from_json(path) == SPLIT
    assert ExpertSplit.from_json(SPLIT.to_json()) == SPLIT
    assert ExpertSplit.from_json("[[0, 2, 4, 6], [1, 3, 5]]") == SPLIT  # the reference's bare list format


@pytest.mark.parametrize(
    ("speech", "message"),
    [
        ([[0, 1], [2, 8]], r"layer 1: expert index 8 out of range \[0, 8\)"),
        ([[0, -1], [2, 3]], r"layer 0: expert index -1 out of range"),
        ([[0, 1], [3, 2, 3]], r"layer 1: expert index 3 listed twice"),
        ([[0, 1]], r"1 layers but the model has 2 MoE layers"),
    ],
)
def test_bad_split_raises_naming_layer_and_index(speech, message):
    split = ExpertSplit(speech)
    with pytest.raises(ValueError, match=message):
        split.validate(n_layers=2, n_experts=8)
    with pytest.raises(ValueError, match=message):
        SpeechLM.build(tiny_config(), expert_split=split)


def test_malformed_json_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not an integer"):
        ExpertSplit.from_json('{"speech": [[0, "a"]]}')
    with pytest.raises(ValueError, match="exactly the key"):
        ExpertSplit.from_json('{"audio": []}')
    with pytest.raises(ValueError, match="does not exist"):
        ExpertSplit.from_json(tmp_path / "missing.json")


@pytest.mark.parametrize("mode", [RoutingMode.SPEECH_ONLY, RoutingMode.TEXT_ONLY])
def test_masked_routing_never_picks_the_other_group(mode):
    model = build_tiny()
    model.set_routing(mode, SPLIT)
    with model.record_routing() as rec, torch.no_grad():
        model(random_batch(b=3, t=16))
    for i, moe in enumerate(model.moe_layers()):
        speech = set(SPLIT.speech[i])
        used = set(rec.indices(moe.layer_idx).unique().tolist())
        allowed = speech if mode is RoutingMode.SPEECH_ONLY else set(range(8)) - speech
        assert used and used <= allowed
        probs = rec.probs(moe.layer_idx)
        outside = sorted(set(range(8)) - allowed)
        assert torch.all(probs.gather(1, rec.indices(moe.layer_idx)) > 0)
        assert not set(outside) & used



def _gate(model, batch, mode, gate):
    """Per MoE layer: (full probs, top-k indices, top-k weights) of one forward under ``mode`` and ``gate``."""
    model.set_routing(mode, SPLIT)
    for moe in model.moe_layers():
        moe.router.set_masked_gate(gate)
    with model.record_routing() as rec, torch.no_grad():
        model(batch)
    return {moe.layer_idx: (rec.probs(moe.layer_idx), rec.indices(moe.layer_idx),
                            torch.cat([r.topk_weights for r in rec.records[moe.layer_idx]]))
            for moe in model.moe_layers()}


def test_served_gate_trains_each_expert_at_the_weight_it_is_served_with():
    """Issue 11: under a mask the chosen experts get the unmasked router's probabilities (no renormalisation),
    so a masked stage and the unmasked served model weight an expert the same; the reference's renormalised
    gate gives them more."""
    model = build_tiny()
    batch = random_batch(b=3, t=16)
    model.set_routing(RoutingMode.NONE)
    with model.record_routing() as rec, torch.no_grad():
        model(batch)
    served = _gate(model, batch, RoutingMode.SPEECH_ONLY, "served")
    renorm = _gate(model, batch, RoutingMode.SPEECH_ONLY, "renormalised")
    for i, moe in enumerate(model.moe_layers()):
        probs, idx, weights = served[moe.layer_idx]
        assert set(idx.unique().tolist()) <= set(SPLIT.speech[i])
        assert torch.allclose(weights, probs.gather(1, idx))  # weights are the full-softmax probabilities
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[0]))
    first = model.moe_layers()[0].layer_idx  # same input with and without the mask (later layers' inputs differ)
    _, idx, weights = served[first]
    assert torch.allclose(weights, rec.probs(first).gather(1, idx)), "served weight = unmasked router's weight"
    _, idx_r, weights_r = renorm[first]
    assert torch.equal(idx_r.sort(-1).values, idx.sort(-1).values)  # the same experts, larger weights
    assert torch.all(weights_r.gather(1, idx_r.argsort(-1)) > weights.gather(1, idx.argsort(-1)))
    assert torch.all(weights_r.sum(-1) >= 2 / len(SPLIT.speech[0]) - 1e-6)  # top-2 of 4 allowed: >= half
    with pytest.raises(ValueError, match="unknown masked gate"):
        model.moe_layers()[0].router.set_masked_gate("softmax")


def test_routing_none_uses_both_groups_and_can_be_restored():
    model = build_tiny()
    batch = random_batch(b=3, t=16)
    with torch.no_grad():
        before = model(batch).logits
        model.set_routing("speech_only", SPLIT)
        masked = model(batch).logits
        model.set_routing(RoutingMode.NONE)
        with model.record_routing() as rec:
            after = model(batch).logits
    assert not torch.allclose(before, masked)
    assert torch.equal(before, after)
    assert len(set(rec.indices(1).unique().tolist()) - set(SPLIT.speech[0])) > 0


def test_mode_needs_split_and_enough_experts_for_top_k():
    model = build_tiny()
    with pytest.raises(ValueError, match="needs an expert split"):
        model.set_routing(RoutingMode.TEXT_ONLY)
    with pytest.raises(ValueError, match="layer 2: only 1 experts allowed but top-k is 2"):
        model.set_routing(RoutingMode.SPEECH_ONLY, ExpertSplit([[0, 1], [3]]))


def test_expert_counts_by_position_selection():
    model = build_tiny()
    batch = random_batch(b=2, t=12)
    with model.record_routing() as rec, torch.no_grad():
        model(batch)
    audio_pos = torch.zeros(2, 12, dtype=torch.bool)
    audio_pos[1, 2:6] = True
    speech = rec.expert_counts(1, audio_pos)
    text = rec.expert_counts(1, ~audio_pos)
    assert int(speech.sum()) == 4 * 2 and int(text.sum()) == 20 * 2  # top-2 per token
    assert torch.equal(speech + text, rec.expert_counts(1))
