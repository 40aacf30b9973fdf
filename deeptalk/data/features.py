"""Speech input features: 16 kHz mono waveform → Whisper log-mel → frozen-encoder frames ``[F, d_model]``.

Uses transformers' ``WhisperFeatureExtractor`` (the reference feeds Whisper-medium 80×3000 log-mels), with
the window set by :class:`~deeptalk.audio_input.AudioInputConfig` so the encoder input length and the number
of sequence positions (``AudioInputConfig.n_positions``) agree everywhere.

The encoder is pretrained and frozen, so the ``encode`` step stores its outputs and training never runs it;
:class:`SpeechFeatureExtractor` is the one implementation of wav → frames, used by that step and by the service.
It runs the encoder on the clip's own positions (``2 · projector_stride · n_positions`` mel frames, see
``deeptalk.model.audio_encoder.encode_trimmed``), not on the padded window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from deeptalk.audio_input import AudioInputConfig
from deeptalk.data.audio_io import resample, to_mono

HOP_LENGTH = 160  # Whisper: 10 ms hop at 16 kHz → 100 mel frames per second
N_FFT = 400


@dataclass(frozen=True)
class Features:
    """Log-mel of one utterance, as the model and the packer need it."""

    mel: np.ndarray  # [n_mels, mel_frames] float32, padded to the encoder window
    n_samples: int  # 16 kHz samples of the (resampled) input
    n_positions: int  # sequence positions the segment occupies (BOA/EOA not included)


class LogMelExtractor:
    """Whisper log-mel with the project's window length; callable on a waveform at any sample rate."""

    def __init__(self, cfg: AudioInputConfig):
        if cfg.sample_rate != 16000:
            raise ValueError(
                f"Whisper features need 16 kHz input, AudioInputConfig.sample_rate={cfg.sample_rate}"
            )
        self.cfg = cfg
        self.max_samples = cfg.mel_frames * HOP_LENGTH
        self._fe = WhisperFeatureExtractor(
            feature_size=cfg.n_mels,
            sampling_rate=cfg.sample_rate,
            hop_length=HOP_LENGTH,
            n_fft=N_FFT,
            chunk_length=max(1, int(np.ceil(cfg.max_seconds))),
        )

    def prepare(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """Mono float32 at 16 kHz; rejects empty, non-finite or too long input with a ValueError."""
        wav = np.asarray(wav)
        if wav.ndim == 2 and wav.shape[0] < wav.shape[1]:  # channels-first → channels-last for to_mono
            wav = wav.T
        if wav.ndim not in (1, 2):
            raise ValueError(f"expected a mono or [samples, channels] waveform, got shape {wav.shape}")
        wav = resample(to_mono(wav), int(sr), self.cfg.sample_rate)
        if wav.size == 0:
            raise ValueError("empty waveform")
        if not np.isfinite(wav).all():
            raise ValueError("waveform contains NaN or infinite samples")
        if wav.size > self.max_samples:
            raise ValueError(
                f"audio of {wav.size / self.cfg.sample_rate:.2f} s exceeds the encoder window of "
                f"{self.cfg.max_seconds} s"
            )
        return wav

    def __call__(self, wav: np.ndarray, sr: int) -> Features:
        wav = self.prepare(wav, sr)
        out = self._fe(
            wav,
            sampling_rate=self.cfg.sample_rate,
            padding="max_length",
            max_length=self.max_samples,
            truncation=True,
            return_tensors="np",
        )
        mel = np.asarray(out["input_features"][0], dtype=np.float32)
        if mel.shape != (self.cfg.n_mels, self.cfg.mel_frames):
            raise RuntimeError(
                f"feature extractor gave {mel.shape}, expected {(self.cfg.n_mels, self.cfg.mel_frames)}"
            )
        return Features(mel=mel, n_samples=int(wav.size), n_positions=self.cfg.n_positions(int(wav.size)))


@dataclass(frozen=True)
class SpeechFeatures:
    """Frozen-encoder frames of one utterance: what the projector reads at its ``n_positions`` positions."""

    frames: np.ndarray  # [projector_stride · n_positions, d_model] float32
    n_samples: int
    n_positions: int


class SpeechFeatureExtractor:
    """wav → log-mel → frozen encoder frames, trimmed to the positions the utterance occupies.

    ``encode`` maps a log-mel ``[n_mels, F]`` (F even) to encoder frames ``[F / 2, d_model]``: the model's
    ``SpeechLM.encode_speech`` when serving, ``encode_trimmed`` over the converted encoder in the encode step.
    """

    def __init__(self, cfg: AudioInputConfig, encode: Callable[[torch.Tensor], torch.Tensor]):
        self.cfg = cfg
        self.log_mel = LogMelExtractor(cfg)
        self.encode = encode

    def __call__(self, wav: np.ndarray, sr: int) -> SpeechFeatures:
        mel = self.log_mel(wav, sr)
        n_mel = 2 * self.cfg.projector_stride * mel.n_positions  # ≤ the window: n_positions ≤ max_positions
        with torch.inference_mode():
            frames = self.encode(torch.from_numpy(mel.mel[:, :n_mel]))
        return SpeechFeatures(frames.float().cpu().numpy(), mel.n_samples, mel.n_positions)


