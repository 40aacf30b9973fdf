"""The tensors that cross the data → model boundary.

Packing (``deeptalk.data``) produces them, the speech LM (``deeptalk.model``) consumes them, the training
runner and the streaming generator only move them around. Shapes use B batch, T positions, S = K+1 streams,
N user-audio segments in the batch, F encoder frames, D encoder width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch


@dataclass
class AudioSegments:
    """User audio placed into sequences: segment n fills ``n_positions[n]`` consecutive positions of
    sequence ``batch_index[n]`` starting at ``start[n]``; at those positions the K audio-stream embeddings
    are replaced by the projected encoder features (the reference's ``replace_with_whisper_feature``), or, with
    a hearing interface (``deeptalk.model.hearing``), the text-stream embedding by the heard units.
    The frozen encoder's frames are given, not log-mels: they are computed once (the ``encode`` step, or
    ``SpeechLM.encode_speech`` when serving) and the projector reads ``projector_stride`` frames a position."""

    frames: torch.Tensor  # [N, F, D] float encoder frames, zero-padded to the longest segment of the batch
    n_positions: torch.Tensor  # [N] long, positions the segment occupies (AudioInputConfig.n_positions)
    batch_index: torch.Tensor  # [N] long
    start: torch.Tensor  # [N] long
    frame_lengths: torch.Tensor | None = None  # [N] long, each segment's own frames (None: all F)
    targets: torch.Tensor | None = None  # [N, L] long local text ids of what was said (CTC), 0-padded
    target_lengths: torch.Tensor | None = None  # [N] long

    def lengths(self) -> torch.Tensor:
        """Each segment's own number of encoder frames."""
        if self.frame_lengths is not None:
            return self.frame_lengths
        return torch.full((self.frames.shape[0],), self.frames.shape[1], dtype=torch.long)

    def to(self, device: torch.device | str) -> AudioSegments:
        return AudioSegments(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                                for f in fields(self)})


@dataclass
class SpeechBatch:
    input_ids: torch.Tensor  # [B, T, S] global token ids (see deeptalk.tokens.TokenLayout)
    attention_mask: torch.Tensor  # [B, T] 1 for real positions, 0 for right padding
    labels: torch.Tensor | None = None  # [B, T, S] global ids or IGNORE_INDEX, aligned with input_ids
    audio: AudioSegments | None = None

    def to(self, device: torch.device | str) -> SpeechBatch:
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            audio=None if self.audio is None else self.audio.to(device),
        )


def pad_frames(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack encoder frames ``[F_n, D]`` of different lengths into ``[N, max F, D]`` (zeros after each end)."""
    widths = {f.shape[-1] for f in frames}
    if len(widths) != 1 or any(f.ndim != 2 for f in frames):
        raise ValueError(f"encoder frames must be [F, D] with one D, got {sorted({tuple(f.shape) for f in frames})}")
    out = frames[0].new_zeros(len(frames), max(f.shape[0] for f in frames), widths.pop())
    for i, f in enumerate(frames):
        out[i, : f.shape[0]] = f
    return out
