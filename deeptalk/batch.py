"""The tensors that cross the data → model boundary.

Packing (``deeptalk.data``) produces them, the speech LM (``deeptalk.model``) consumes them, the training
runner and the streaming generator only move them around. Shapes use B batch, T positions, S = K+1 streams,
N user-audio segments in the batch, M log-mel bins, F mel frames.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class AudioSegments:
    """User audio placed into sequences: segment n fills ``n_positions[n]`` consecutive positions of
    sequence ``batch_index[n]`` starting at ``start[n]``; at those positions the K audio-stream embeddings
    are replaced by the projected encoder features (the reference's ``replace_with_whisper_feature``)."""

    mels: torch.Tensor  # [N, M, F] float log-mel, padded to the encoder's fixed input length
    n_positions: torch.Tensor  # [N] long, positions the segment occupies (AudioInputConfig.n_positions)
    batch_index: torch.Tensor  # [N] long
    start: torch.Tensor  # [N] long

    def to(self, device: torch.device | str) -> AudioSegments:
        return AudioSegments(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


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
