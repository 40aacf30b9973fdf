"""Expert-load statistics, position modalities and the split rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deeptalk.profiling import (
    ExpertLoad,
    SplitBounds,
    adaptive_split,
    fixed_split,
    modality_masks,
    plot_heatmaps,
    random_split,
    split_from_rule,
    write_load_csv,
)
from deeptalk.tokens import IGNORE_INDEX, TokenLayout


@st.composite
def load_tables(draw):
    n_layers = draw(st.integers(1, 5))
    n_experts = draw(st.integers(4, 24))
    top_k = draw(st.integers(1, n_experts // 2))
    table = arrays(np.float64, (n_layers, n_experts), elements=st.floats(0, 1e4, allow_nan=False))
    return draw(table), draw(table), top_k


def _assert_valid(split, n_layers, n_experts, top_k, lo=None, hi=None):
    assert len(split) == n_layers
    for layer in split:
        assert layer == sorted(set(layer)), "indices sorted and unique"
        assert all(0 <= e < n_experts for e in layer)
        assert top_k <= len(layer) <= n_experts - top_k, "each group can still route top_k experts"
        if lo is not None:
            assert lo <= len(layer) <= hi


@settings(max_examples=150, deadline=None)
@given(load_tables(), st.floats(0.05, 0.5), st.floats(0.5, 0.95))
def test_adaptive_split_is_valid_on_random_tables(tables, min_frac, max_frac):
    speech, text, top_k = tables
    bounds = SplitBounds(speech.shape[1], top_k, min_frac, max_frac)
    if bounds.lo > bounds.hi:
        with pytest.raises(ValueError, match="no valid split"):
            adaptive_split(speech, text, bounds)
        return
    split = adaptive_split(speech, text, bounds)
    _assert_valid(split, *speech.shape, top_k, bounds.lo, bounds.hi)


@settings(max_examples=100, deadline=None)
@given(load_tables(), st.integers(0, 10_000))
def test_fixed_and_random_splits_are_valid(tables, seed):
    speech, text, top_k = tables
    n_layers, n_experts = speech.shape
    n = max(top_k, n_experts // 3)
    _assert_valid(fixed_split(speech, text, n, top_k), n_layers, n_experts, top_k, n, n)
    rnd = random_split(n_layers, n_experts, n, top_k, seed)
    _assert_valid(rnd, n_layers, n_experts, top_k, n, n)
    assert rnd == random_split(n_layers, n_experts, n, top_k, seed), "seeded"


def test_adaptive_picks_experts_with_more_speech_than_text_share():
    speech = np.array([[50, 40, 5, 5, 0, 0, 0, 0]], dtype=float)
    text = np.array([[0, 5, 20, 20, 20, 15, 10, 10]], dtype=float)
    assert adaptive_split(speech, text, SplitBounds(8, 2, 0.25, 0.5)) == [[0, 1]]
    # the minimum fraction forces a third expert in, taken in ratio order (expert 2 and 3 tie → lower index)
    assert adaptive_split(speech, text, SplitBounds(8, 2, 0.375, 0.5)) == [[0, 1, 2]]
    assert fixed_split(speech, text, 4, 2) == [[0, 1, 2, 3]]


def test_bad_rules_and_counts_raise():
    load = ExpertLoad(2, 8, 2)
    with pytest.raises(ValueError, match="unknown split rule"):
        split_from_rule("topk:3", load, 0.25, 0.5, 0)
    with pytest.raises(ValueError, match="at least top_k"):
        split_from_rule("fixed:7", load, 0.25, 0.5, 0)
    with pytest.raises(ValueError, match="non-negative"):
        adaptive_split(-np.ones((1, 8)), np.ones((1, 8)), SplitBounds(8, 2))


def _layout() -> TokenLayout:
    return TokenLayout(text_vocab_size=40, n_audio_streams=2, codebook_size=16)


def test_modality_masks_follow_the_documented_definition():
    lay = _layout()
    pad_a = [lay.audio_special("PAD_A", s) for s in range(2)]
    text_tok = [pad_a[0], pad_a[1], lay.text_id(5)]
    feature = [pad_a[0], pad_a[1], lay.text_special("AUDIO_PH")]
    speaking = [lay.audio_id(0, 3), lay.audio_id(1, 4), lay.text_special("PAD_T")]
    role = [pad_a[0], pad_a[1], lay.text_special("ASSISTANT")]
    padding = text_tok
    ids = torch.tensor([[text_tok, feature, speaking, role, padding]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 3, 0] = lay.audio_id(0, 1)  # the answer's first code is the label of the speaker-token position
    attn = torch.tensor([[1, 1, 1, 1, 0]])
    speech, text = modality_masks(ids, labels, attn, lay)
    assert speech.tolist() == [[False, True, True, True, False]]
    assert text.tolist() == [[True, False, False, False, False]]
    with pytest.raises(ValueError, match="input_ids must be"):
        modality_masks(ids[..., :2], None, attn, lay)


def test_expert_load_counts_and_outputs(tmp_path):
    load = ExpertLoad(n_layers=2, n_experts=4, top_k=2)
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.7, 0.2, 0.05, 0.05]])
    top = probs.topk(2).indices
    masks = {"speech": torch.tensor([[True, False, False]]), "text": torch.tensor([[False, True, True]])}
    load.add_positions(masks)
    for layer in range(2):
        load.add_layer(layer, top, probs, masks)
    assert load.counts["speech"][0].tolist() == [1, 1, 0, 0]
    assert load.counts["text"][0].tolist() == [1, 1, 1, 1]
    assert load.probs["text"][1] == pytest.approx([0.8, 0.4, 0.35, 0.45])
    assert load.positions == {"speech": 1, "text": 2}
    assert np.allclose(load.normalised("speech").sum(1), 1)
    again = ExpertLoad.from_json(load.to_json())
    assert np.array_equal(again.counts["text"], load.counts["text"])
    with pytest.raises(ValueError, match="outside"):
        load.add_layer(2, top, probs, masks)
    split = [[0, 1], [0, 1]]
    write_load_csv(load, tmp_path / "load.csv", split)
    rows = (tmp_path / "load.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 4 and rows[1].endswith(",speech")
    pngs = plot_heatmaps(load, tmp_path / "png", split)
    assert [p.name for p in pngs] == ["expert_load_speech.png", "expert_load_text.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_profile_model_counts_every_position_top_k_times(tmp_path):
    from deeptalk.model.experts import ExpertSplit
    from deeptalk.model.switches import RoutingMode
    from deeptalk.profiling import profile_model
    from tests.training.helpers import save_tiny_model, synthetic_batches, tiny_cfg

    cfg = tiny_cfg(tmp_path)
    model = save_tiny_model(cfg, tmp_path / "m", split=ExpertSplit([[0, 1], [2, 3]]))
    model.set_routing(RoutingMode.SPEECH_ONLY)
    make = synthetic_batches(cfg)
    load = profile_model(model, [make(0), make(1)])
    assert model.routing_mode is RoutingMode.SPEECH_ONLY, "the stage's routing mode is restored"
    for m in ("speech", "text"):
        assert load.positions[m] > 0
        assert (load.counts[m].sum(1) == load.positions[m] * load.top_k).all()
        assert np.allclose(load.probs[m].sum(1), load.positions[m], atol=1e-3)
    assert (load.counts["text"][:, 4:] > 0).any(), "profiling routes over all experts, not the stage's mask"
