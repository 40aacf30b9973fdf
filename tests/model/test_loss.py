"""Loss functions: DeepSeek's sequence-level balance loss and the loss combinations."""

from __future__ import annotations

import torch

from deeptalk.model.config import LossConfig
from deeptalk.model.loss import combine_losses, sequence_aux_loss

from .conftest import LAYOUT


def _balanced(b: int, t: int, e: int = 4, k: int = 2):
    probs = torch.full((b, t, e), 1.0 / e)
    idx = torch.stack([torch.arange(t) % e, (torch.arange(t) + 1) % e], dim=-1).expand(b, t, k)
    return probs, idx


def test_balanced_routing_gives_alpha():
    probs, idx = _balanced(2, 8)
    assert torch.allclose(sequence_aux_loss(probs, idx, None, alpha=0.01), torch.tensor(0.01))


def test_collapsed_routing_costs_more_and_padding_is_ignored():
    probs, idx = _balanced(1, 8)
    collapsed_p = torch.zeros(1, 8, 4)
    collapsed_p[..., 0] = 1.0
    collapsed_i = torch.zeros(1, 8, 2, dtype=torch.long)
    collapsed_i[..., 1] = 1
    assert sequence_aux_loss(collapsed_p, collapsed_i, None, 1.0) > sequence_aux_loss(probs, idx, None, 1.0)
    padded_p = torch.cat([probs, collapsed_p[:, :4]], dim=1)  # 4 padded positions with collapsed routing
    padded_i = torch.cat([idx, collapsed_i[:, :4]], dim=1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], dim=1)
    assert torch.allclose(sequence_aux_loss(padded_p, padded_i, mask, 1.0), sequence_aux_loss(probs, idx, None, 1.0))


def test_combinations():
    losses = {"text": torch.tensor(2.0), "audio_0": torch.tensor(4.0), "audio_2": torch.tensor(6.0)}
    assert combine_losses(losses, LAYOUT, LossConfig()) == 12.0
    assert combine_losses(losses, LAYOUT, LossConfig(reduction="reference_mean")) == 3.0  # 12 / (3 + 1)
    weighted = LossConfig(text_weight=2.0, audio_weights=(0.5, 1.0, 0.0))
    assert combine_losses(losses, LAYOUT, weighted) == 6.0
    assert combine_losses({}, LAYOUT, LossConfig()) is None
