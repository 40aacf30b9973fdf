"""Speech input path: log-mel → transformers ``WhisperEncoder`` (50 Hz) → frame-stacking projector → LLM width.

Geometry (frames per position, fixed mel length) lives in ``deeptalk.audio_input.AudioInputConfig`` so packing
and the model agree on how many positions a segment occupies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import WhisperConfig, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from deeptalk.audio_input import AudioInputConfig

log = logging.getLogger(__name__)

# Whisper's fixed sinusoidal positions are not trained (transformers freezes them too).
FIXED_ENCODER_PARAMS = ("embed_positions.weight",)


def build_audio_encoder(cfg: AudioInputConfig) -> WhisperEncoder:
    """A Whisper encoder from ``cfg`` or, when ``cfg.encoder_checkpoint`` is set, from that local directory."""
    if cfg.encoder_checkpoint is not None:
        path = Path(cfg.encoder_checkpoint)
        if not (path / "config.json").exists():
            raise ValueError(f"audio encoder checkpoint {path} has no config.json")
        encoder = WhisperModel.from_pretrained(path, local_files_only=True).get_encoder()
        _check_geometry(encoder.config, cfg)
        return encoder
    config = WhisperConfig(
        num_mel_bins=cfg.n_mels,
        encoder_layers=cfg.encoder_layers,
        encoder_attention_heads=cfg.encoder_heads,
        encoder_ffn_dim=cfg.encoder_ffn_dim,
        d_model=cfg.encoder_dim,
        max_source_positions=cfg.max_source_positions,
        decoder_layers=1,
        decoder_attention_heads=cfg.encoder_heads,
        decoder_ffn_dim=cfg.encoder_ffn_dim,
    )
    return WhisperEncoder(config)


def _check_geometry(config: WhisperConfig, cfg: AudioInputConfig) -> None:
    if config.num_mel_bins != cfg.n_mels or config.d_model != cfg.encoder_dim:
        raise ValueError(
            f"encoder checkpoint has {config.num_mel_bins} mels / d_model {config.d_model}, "
            f"AudioInputConfig says {cfg.n_mels} / {cfg.encoder_dim}"
        )
    if config.max_source_positions != cfg.max_source_positions:
        raise ValueError(
            f"encoder checkpoint covers {config.max_source_positions} frames, AudioInputConfig.max_seconds gives "
            f"{cfg.max_source_positions}"
        )


class AudioProjector(nn.Module):
    """Stack ``stride`` consecutive 50 Hz encoder frames, then Linear → GELU → Linear to the LLM width."""

    def __init__(self, cfg: AudioInputConfig, hidden_size: int) -> None:
        super().__init__()
        self.stride = cfg.projector_stride
        self.fc1 = nn.Linear(cfg.encoder_dim * cfg.projector_stride, cfg.projector_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(cfg.projector_hidden, hidden_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        n, t, d = frames.shape  # [N, F_enc, D]
        t = t - t % self.stride
        stacked = frames[:, :t].reshape(n, t // self.stride, d * self.stride)  # [N, P, stride·D]
        return self.fc2(self.act(self.fc1(stacked)))  # [N, P, hidden]
