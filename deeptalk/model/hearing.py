"""Hearing: a CTC-trained acoustic head whose output the LM reads as (soft) text.

Measured on the tiny corpus (issue 19): every autoregressive decoder on projected Whisper frames fits the
training voices and fails on new ones (held-out WER 0.76-0.80), while a frame-local CTC head on the same frames
generalises (0.35-0.42). So with ``AudioInputConfig.interface`` ``pseudo_text`` or ``ctc_tokens`` the acoustic
evidence reaches the LM through this head:

1. :class:`CTCHead` stacks ``projector_stride`` frozen-encoder frames per position and maps them (MLP) to
   logits over the LM's text block plus one blank; S1 trains it with CTC on the transcript (SpecAugment-style
   time and channel masks while training).
2. :func:`hear` collapses the frame posteriors the CTC way: a position whose argmax is blank is dropped, a run of
   positions with the same argmax becomes one *heard unit*. Each unit carries its token (the greedy CTC
   transcript) and its non-blank posterior (mean over the run, temperature ``ctc_temperature``).
3. The LM reads a unit as text: ``ctc_tokens`` embeds its token (exactly a typed word), ``pseudo_text`` the
   posterior-weighted mean of the text embedding rows (LegoSLM, arXiv 2505.11352). Either way a spoken turn
   occupies as many positions as units were heard, so packing asks :func:`heard_positions` first.

The head is trained in S1 only and frozen afterwards, so the number of units per utterance is fixed for the
later stages and serving computes the same units from the same frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deeptalk.audio_input import AudioInputConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeardUnits:
    """What the head heard in one segment: ``tokens`` [m] local text ids, ``posteriors`` [m, V] over the text
    block (rows sum to 1, blank removed), one row per heard unit."""

    tokens: torch.Tensor
    posteriors: torch.Tensor

    def __len__(self) -> int:
        return int(self.tokens.numel())


class CTCHead(nn.Module):
    """Stack ``stride`` encoder frames → LayerNorm → Linear → GELU → Linear → GELU → Linear to V + 1 (blank last).

    ``n_units`` is the size of the LM's text block, so a heard unit is an LM text token. Frame-local on purpose:
    Whisper's frames already see the whole clip, and the measured failure of deeper decoders was fitting voices.
    """

    def __init__(self, cfg: AudioInputConfig, n_units: int) -> None:
        super().__init__()
        self.stride = cfg.projector_stride
        self.n_units = n_units
        self.cfg = cfg
        width = cfg.encoder_dim * cfg.projector_stride
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, cfg.projector_hidden)
        self.fc2 = nn.Linear(cfg.projector_hidden, cfg.projector_hidden)
        self.out = nn.Linear(cfg.projector_hidden, n_units + 1)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(cfg.ctc_dropout)

    @property
    def blank(self) -> int:
        return self.n_units

    @property
    def encoder_dim(self) -> int:
        return self.fc1.in_features // self.stride

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Encoder frames ``[N, F, D]`` → CTC logits ``[N, F // stride, V + 1]``."""
        n, t, d = frames.shape
        if d != self.encoder_dim:
            raise ValueError(f"CTC head expects encoder frames of width {self.encoder_dim}, got {tuple(frames.shape)}")
        frames = frames.to(self.fc1.weight.dtype)
        if self.training:
            frames = spec_augment(frames, self.cfg)
        t = t - t % self.stride
        x = frames[:, :t].reshape(n, t // self.stride, d * self.stride)  # [N, P, stride·D]
        x = self.dropout(self.act(self.fc1(self.norm(x))))
        x = self.dropout(self.act(self.fc2(x)))
        return self.out(x)  # [N, P, V + 1]

    def loss(self, frames: torch.Tensor, frame_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
        """Mean CTC loss (per target token) of ``targets`` [N, L] (local text ids, padded) given the frames."""
        logits = self(frames)
        positions = torch.div(frame_lengths.to(logits.device), self.stride, rounding_mode="floor").clamp(min=1)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [P, N, V + 1]
        return nn.functional.ctc_loss(log_probs, targets.to(logits.device), positions, target_lengths.to(logits.device),
                                      blank=self.blank, reduction="mean", zero_infinity=True)


def spec_augment(frames: torch.Tensor, cfg: AudioInputConfig) -> torch.Tensor:
    """SpecAugment-style masks on encoder frames: ``ctc_time_masks`` spans of up to ``ctc_time_mask_frames``
    frames and ``ctc_channel_masks`` bands of up to ``ctc_channel_mask_width`` channels set to 0 per segment."""
    n, t, d = frames.shape
    if t == 0:
        return frames
    keep = torch.ones(n, t, d, dtype=frames.dtype, device=frames.device)
    for _ in range(cfg.ctc_time_masks):
        width = torch.randint(0, cfg.ctc_time_mask_frames + 1, (n,))
        start = (torch.rand(n) * (t - width).clamp(min=1)).long()
        for i in range(n):
            keep[i, start[i] : start[i] + width[i], :] = 0
    for _ in range(cfg.ctc_channel_masks):
        width = torch.randint(0, cfg.ctc_channel_mask_width + 1, (n,))
        start = (torch.rand(n) * (d - width).clamp(min=1)).long()
        for i in range(n):
            keep[i, :, start[i] : start[i] + width[i]] = 0
    return frames * keep


def collapse(logits: torch.Tensor, temperature: float) -> HeardUnits:
    """CTC collapse of one segment's logits ``[P, V + 1]``: blank-argmax positions dropped, runs of one argmax
    merged into a unit whose posterior is the mean of the run's (blank removed, renormalised)."""
    blank = logits.shape[-1] - 1
    best = logits.argmax(-1)  # [P]
    keep = best != blank
    if not bool(keep.any()):
        return HeardUnits(best.new_zeros(0), logits.new_zeros(0, blank).float())
    idx = torch.nonzero(keep).squeeze(1)
    tokens = best[idx]
    # a new unit starts where the token changes or a dropped (blank) position separates two kept ones
    new = torch.ones_like(idx, dtype=torch.bool)
    new[1:] = (tokens[1:] != tokens[:-1]) | (idx[1:] != idx[:-1] + 1)
    unit = torch.cumsum(new.long(), 0) - 1  # [kept] unit index of each kept position
    probs = torch.softmax(logits[idx, :blank].float() / temperature, dim=-1)  # [kept, V]
    m = int(unit[-1]) + 1
    post = probs.new_zeros(m, blank).index_add_(0, unit, probs)
    post = post / post.sum(-1, keepdim=True)
    return HeardUnits(tokens[new], post)


def hear(head: CTCHead, frames: torch.Tensor, frame_lengths: Iterable[int], temperature: float) -> list[HeardUnits]:
    """Heard units of each segment of ``frames`` [N, F, D] (only its first ``frame_lengths[n]`` frames count).

    Each segment runs alone on its own frames: a batched matmul may round differently with other shapes, and a
    near tie between blank and a word would then change how many units (positions) the segment gets."""
    out = []
    for n, length in enumerate(frame_lengths):
        length = max(head.stride, int(length))
        out.append(collapse(head(frames[n : n + 1, :length])[0], temperature))
    return out


@torch.no_grad()
def heard_positions(head: CTCHead, utts: Iterable[str], frames_of: Callable[[str], np.ndarray | torch.Tensor],
                    temperature: float) -> dict[str, int]:
    """``utt_id → number of heard units``: how many positions packing gives each utterance's turn."""
    was_training = head.training
    head.eval()
    out: dict[str, int] = {}
    utts = sorted(utts)
    for u in utts:
        frames = torch.as_tensor(frames_of(u), dtype=torch.float32)
        out[u] = len(hear(head, frames[None], [frames.shape[0]], temperature)[0])
    head.train(was_training)
    return out
