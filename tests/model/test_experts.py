"""ExpertSplit validation and JSON, routing masks (recorded router decisions), router recording."""

from __future__ import annotations

import pytest
import torch

from deeptalk.model.experts import ExpertSplit, RoutingMode
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
        assert torch.all(probs[:, outside] == 0)
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[0]))  # renormalised within the group


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
