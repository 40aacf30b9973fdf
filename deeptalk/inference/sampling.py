"""Token choice from one stream's logits: repetition penalty, temperature, top-k (top-k 1 = greedy).

Pure functions on tensors so the generator stays about streams and steps, and so tests can pin them down.
"""

from __future__ import annotations

import torch


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty (as in HF ``RepetitionPenaltyLogitsProcessor``, used by the reference's text decoding):
    logits of already generated tokens are divided by ``penalty`` when positive, multiplied when negative.

    ``logits``: [..., V]; ``previous``: 1-D local ids already generated on this stream.
    """
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    logits = logits.clone()
    idx = previous.unique()
    picked = logits[..., idx]
    logits[..., idx] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def sample_top_k(
    logits: torch.Tensor, top_k: int, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample from the ``top_k`` most likely entries of ``logits`` [..., V]; returns ids [...].

    ``top_k == 1`` is argmax (deterministic, no random draw). Entries at ``-inf`` are never chosen.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_k == 1:
        return logits.argmax(dim=-1)
    k = min(top_k, logits.shape[-1])
    values, indices = torch.topk(logits.float() / temperature, k, dim=-1)  # [..., k]
    probs = torch.softmax(values, dim=-1)
    flat = probs.reshape(-1, k)
    choice = torch.multinomial(flat, 1, generator=generator).reshape(*probs.shape[:-1], 1)
    return indices.gather(-1, choice).squeeze(-1)


def allowed_mask(size: int, allowed: list[range | int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Additive mask [size]: 0 at allowed local ids, -inf elsewhere (e.g. unused special slots)."""
    mask = torch.full((size,), float("-inf"), device=device)
    for item in allowed:
        if isinstance(item, range):
            mask[item.start : item.stop] = 0.0
        else:
            mask[item] = 0.0
    return mask
