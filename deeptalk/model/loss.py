"""Loss functions of the speech LM, as pure functions of tensors.

- per-stream next-token cross-entropy over each stream's slice of the tied head (labels aligned with inputs;
  the shift by one happens here);
- their combination (``LossConfig``: fixed weights, or the reference's list average);
- DeepSeek's sequence-level load-balancing loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeptalk.model.config import LossConfig
from deeptalk.tokens import IGNORE_INDEX, TokenLayout


def stream_name(layout: TokenLayout, stream: int) -> str:
    return "text" if stream == layout.text_stream else f"audio_{stream}"


def stream_losses(logits: torch.Tensor, labels: torch.Tensor, layout: TokenLayout) -> dict[str, torch.Tensor]:
    """Mean next-token CE per stream over its own vocabulary slice, from full-vocabulary logits.

    ``logits`` [B, T, V]; ``labels`` [B, T, S] global ids or IGNORE_INDEX, aligned with the inputs (the label
    at t is predicted from position t-1). A stream whose labels are all ignored is left out (reference).
    """
    if labels.shape[:2] != logits.shape[:2] or labels.shape[-1] != layout.n_streams:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)} and "
                         f"{layout.n_streams} streams")
    shifted = logits[:, :-1]
    return _stream_losses(labels, layout, lambda valid, sl: shifted[valid][:, sl])


def stream_losses_from_hidden(
    hidden: torch.Tensor, head: torch.Tensor, labels: torch.Tensor, layout: TokenLayout
) -> dict[str, torch.Tensor]:
    """Same losses as :func:`stream_losses`, computing logits only where a stream has a label and only over
    that stream's rows of the tied ``head`` [V, H]: a text-only batch never touches the K·4160 audio rows,
    which dominate the head's cost at small hidden sizes. ``hidden`` [B, T, H] is the final-norm output."""
    if labels.shape[:2] != hidden.shape[:2] or labels.shape[-1] != layout.n_streams:
        raise ValueError(f"labels {tuple(labels.shape)} do not match hidden states {tuple(hidden.shape)} and "
                         f"{layout.n_streams} streams")
    shifted = hidden[:, :-1]
    return _stream_losses(labels, layout, lambda valid, sl: shifted[valid] @ head[sl].T)


def _stream_losses(labels: torch.Tensor, layout: TokenLayout, logits_at) -> dict[str, torch.Tensor]:
    """``logits_at(valid [B, T-1] bool, slice) -> [N, slice size]`` gives a stream's logits at its labels."""
    out: dict[str, torch.Tensor] = {}
    for stream in range(layout.n_streams):
        target = labels[:, 1:, stream]
        valid = target != IGNORE_INDEX
        if not bool(valid.any()):
            continue
        sl = layout.stream_slice(stream)
        local = target - sl.start
        bad = valid & ((local < 0) | (local >= sl.stop - sl.start))
        if bool(bad.any()):
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"label {int(target[b, t])} at batch {b}, position {t + 1} is not an id of stream "
                f"{stream_name(layout, stream)} [{sl.start}, {sl.stop})"
            )
        out[stream_name(layout, stream)] = F.cross_entropy(logits_at(valid, sl).float(), local[valid])
    return out


def combine_losses(losses: dict[str, torch.Tensor], layout: TokenLayout, cfg: LossConfig) -> torch.Tensor | None:
    """Training loss from the per-stream losses (see LossConfig for the two reductions)."""
    if not losses:
        return None
    if cfg.reduction == "reference_mean":
        # (Σ losses + 0·state) / (n + 1): the reference's list average including its zero-weighted state loss.
        return torch.stack(list(losses.values())).sum() / (len(losses) + 1)
    total = 0.0
    for name, value in losses.items():
        weight = cfg.text_weight if name == "text" else cfg.audio_weight(int(name.split("_")[1]), layout.n_audio_streams)
        total = total + weight * value
    return total


def sequence_aux_loss(
    probs: torch.Tensor, topk_indices: torch.Tensor, attention_mask: torch.Tensor | None, alpha: float
) -> torch.Tensor:
    """DeepSeek-V2 sequence-level balance loss of one MoE layer (``seq_aux=True``).

    For each sequence b with L real tokens, E experts and top-k:
        f_i = E / (k·L) · #{t : i ∈ topk(t)},   P_i = 1/L · Σ_t p_{t,i},   L_aux(b) = α · Σ_i f_i · P_i
    averaged over sequences. ``probs`` [B, T, E] (masked experts have p = 0 but still count in E, as in
    the reference); ``topk_indices`` [B, T, k]; padded positions are excluded.
    """
    b, t, n_experts = probs.shape
    k = topk_indices.shape[-1]
    mask = torch.ones(b, t, dtype=probs.dtype, device=probs.device) if attention_mask is None else attention_mask.to(probs.dtype)
    lengths = mask.sum(1).clamp(min=1.0)  # [B]
    hits = torch.zeros(b, n_experts, dtype=probs.dtype, device=probs.device)
    hits.scatter_add_(1, topk_indices.reshape(b, t * k), mask.repeat_interleave(k, dim=1))
    f = hits * n_experts / (k * lengths[:, None])
    p = (probs * mask[..., None]).sum(1) / lengths[:, None]
    return alpha * (f * p).sum(1).mean()
