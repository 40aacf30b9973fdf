"""Speech input path: log-mel → frozen transformers ``WhisperEncoder`` (50 Hz) → frame-stacking projector → LLM.

The encoder is pretrained and frozen at every profile (the paper freezes Whisper-medium), so its outputs are
computed once by the ``encode`` step and training reads them from disk; the service computes them with the
same function, :func:`encode_trimmed`. Geometry (frames per position) lives in
``deeptalk.audio_input.AudioInputConfig`` so packing and the model agree on how many positions a segment
occupies.
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


@torch.no_grad()
def encode_trimmed(encoder: WhisperEncoder, mel: torch.Tensor) -> torch.Tensor:
    """Frozen Whisper on a clip's own length: log-mel ``[n_mels, F]`` (F even) → frames ``[F / 2, d_model]``.

    Whisper pads every clip to its 30 s window; running on the clip alone costs a fraction of that (a 5 s clip:
    0.036 s vs 0.30 s, tiny.en, one thread) but gives other outputs (cosine 0.93–0.96 vs padded), so training
    features and served features both come from here. Positions are the encoder's first F / 2 sinusoids.
    """
    config = encoder.config
    if mel.ndim != 2 or mel.shape[0] != config.num_mel_bins:
        raise ValueError(f"log-mel must be [{config.num_mel_bins}, frames], got {tuple(mel.shape)}")
    n = int(mel.shape[1])
    if n == 0 or n % 2 or n > 2 * config.max_source_positions:
        raise ValueError(f"log-mel must have an even number of frames in [2, {2 * config.max_source_positions}], got {n}")
    x = mel.to(device=encoder.conv1.weight.device, dtype=encoder.conv1.weight.dtype)[None]
    x = nn.functional.gelu(encoder.conv2(nn.functional.gelu(encoder.conv1(x)))).permute(0, 2, 1)  # [1, F/2, D]
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        x = layer(x, None)
    return encoder.layer_norm(x)[0]


def frozen_encoder(cfg: AudioInputConfig, dtype: torch.dtype,
                   device: str | torch.device = "cpu") -> WhisperEncoder:
    """The frozen encoder as the encode step runs it: in the speech LM's dtype (``model.dtype``), which is the
    dtype ``SpeechLM`` gives its encoder, so stored training frames and served frames are the same computation
    (fp32 stored frames beside a bf16 served encoder was a train/serve skew)."""
    return freeze(build_audio_encoder(cfg)).to(device=device, dtype=dtype)


def freeze(encoder: WhisperEncoder) -> WhisperEncoder:
    """The encoder never trains (its outputs are cached by the encode step): no gradients, eval mode."""
    encoder.requires_grad_(False)
    return encoder.eval()


def _check_geometry(config: WhisperConfig, cfg: AudioInputConfig) -> None:
    if config.num_mel_bins != cfg.n_mels or config.d_model != cfg.encoder_dim:
        raise ValueError(
            f"encoder checkpoint has {config.num_mel_bins} mels / d_model {config.d_model}, "
            f"AudioInputConfig says {cfg.n_mels} / {cfg.encoder_dim}"
        )
    if config.max_source_positions < cfg.max_source_positions:
        raise ValueError(
            f"encoder checkpoint covers {config.max_source_positions} frames, fewer than AudioInputConfig.max_seconds "
            f"needs ({cfg.max_source_positions})"
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
