"""The frozen encoder has one dtype from data preparation to serving: the encode step's frames are the
served model's frames."""

from __future__ import annotations

import dataclasses

import torch

from deeptalk.model.audio_encoder import encode_trimmed, frozen_encoder
from deeptalk.model.config import LossConfig, SpeechLMConfig
from deeptalk.model.speech_lm import SpeechLM
from deeptalk.testing.mini_checkpoints import build_whisper

from .conftest import AUDIO, LAYOUT, tiny_backbone


def test_encode_step_encoder_computes_the_served_models_frames_in_bf16(tmp_path):
    whisper = build_whisper(tmp_path / "whisper", d_model=16, layers=1, heads=2)
    audio = dataclasses.replace(AUDIO, encoder_checkpoint=str(whisper), n_mels=80, encoder_ffn_dim=64)
    cfg = SpeechLMConfig(tiny_backbone(dtype="bfloat16"), LAYOUT, audio, LossConfig())
    served = SpeechLM.build(cfg)
    stored = frozen_encoder(audio, torch.bfloat16)  # what deeptalk.steps.encode builds for model.dtype bf16
    assert next(stored.parameters()).dtype == next(served.audio_encoder.parameters()).dtype == torch.bfloat16
    mel = torch.randn(80, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(encode_trimmed(stored, mel), served.encode_speech(mel))
    fp32 = encode_trimmed(frozen_encoder(audio, torch.float32), mel)  # the skew this removes
    assert not torch.equal(fp32.to(torch.bfloat16), served.encode_speech(mel))
