"""Geometry of the speech input path: waveform → log-mel → Whisper encoder (50 Hz) → projector → positions.

Shared by feature extraction, sequence packing and the model, so the number of sequence positions a
user utterance occupies is computed in exactly one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ENCODER_FRAMES_PER_SECOND = 50  # Whisper: 100 mel frames/s, conv stride 2
# How the acoustic evidence reaches the LM (issue 19; deeptalk.model.hearing):
#   projector:   projected encoder frames at fixed 12.5 Hz positions (the reference's design)
#   pseudo_text: a CTC head's heard units, each read as the posterior-weighted mean of text embeddings
#   ctc_tokens:  the same units read as their argmax tokens (the greedy CTC transcript as text)
INTERFACES = ("projector", "pseudo_text", "ctc_tokens")


@dataclass(frozen=True)
class AudioInputConfig:
    """Frozen pretrained Whisper encoder + trained projector. ``projector_stride`` stacks that many 50 Hz encoder
    frames into one LLM position (1 = the reference's 50 Hz; 4 = 12.5 Hz as in LUCY, cheap enough for CPU
    profiles). The encoder geometry fields describe ``encoder_checkpoint`` (checked when it loads); without a
    checkpoint (unit tests only) an encoder of that geometry is built with random weights."""

    sample_rate: int = 16000
    n_mels: int = 80
    max_seconds: float = 8.0  # encoder input is padded/truncated to this length
    encoder_layers: int = 2
    encoder_dim: int = 128
    encoder_heads: int = 4
    encoder_ffn_dim: int = 256
    projector_stride: int = 4
    projector_hidden: int = 256
    encoder_checkpoint: str | None = None  # local HF Whisper dir (relative: to the project root); None = random
    encoder_source: str = "tiny.en"  # what prepare_encoder converts into models/encoder: tiny.en | base | a CT2 dir
    interface: str = "projector"  # INTERFACES: how the LM reads the audio
    ctc_temperature: float = 1.0  # pseudo_text: softmax temperature of a heard unit's posterior
    ctc_dropout: float = 0.1
    ctc_time_masks: int = 2  # SpecAugment while S1 trains the CTC head: masks per segment ...
    ctc_time_mask_frames: int = 10  # ... of up to this many 50 Hz encoder frames
    ctc_channel_masks: int = 2
    ctc_channel_mask_width: int = 24  # encoder channels

    def __post_init__(self) -> None:
        if self.interface not in INTERFACES:
            raise ValueError(f"audio_input.interface {self.interface!r}: choose one of {INTERFACES}")
        if self.ctc_temperature <= 0:
            raise ValueError(f"audio_input.ctc_temperature must be > 0, got {self.ctc_temperature}")

    @property
    def hears_text(self) -> bool:
        """The LM reads heard units (one position each) rather than fixed-rate projected frames."""
        return self.interface != "projector"

    @property
    def mel_frames(self) -> int:
        """Fixed encoder input length in mel frames (Whisper: 2 × max_source_positions)."""
        return 2 * self.max_source_positions

    @property
    def max_source_positions(self) -> int:
        return int(round(self.max_seconds * ENCODER_FRAMES_PER_SECOND))

    @property
    def positions_per_second(self) -> float:
        return ENCODER_FRAMES_PER_SECOND / self.projector_stride

    @property
    def max_positions(self) -> int:
        return self.max_source_positions // self.projector_stride

    def n_positions(self, n_samples: int) -> int:
        """LLM positions carrying features for ``n_samples`` of 16 kHz audio (BOA/EOA positions not included)."""
        if n_samples <= 0:
            raise ValueError(f"audio segment must have samples, got {n_samples}")
        seconds = n_samples / self.sample_rate
        if seconds > self.max_seconds:
            raise ValueError(f"audio segment of {seconds:.2f} s exceeds the encoder's {self.max_seconds} s")
        return max(1, min(self.max_positions, math.ceil(seconds * self.positions_per_second)))
