"""Speech features: Whisper log-mel window geometry, resampling, encoder frames per position, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeptalk.audio_input import AudioInputConfig
from deeptalk.data.features import LogMelExtractor, SpeechFeatureExtractor

CFG = AudioInputConfig(max_seconds=2.0)


def tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
    return LogMelExtractor(CFG)


def test_shape_positions_and_padding(extractor):
    f = extractor(tone(1.0, 16000), 16000)
    assert f.mel.shape == (CFG.n_mels, CFG.mel_frames) and f.mel.dtype == np.float32
    assert f.n_samples == 16000 and f.n_positions == CFG.n_positions(16000) == 13
    # speech region is louder than the padded tail, which is one constant (Whisper's clamped floor)
    assert f.mel[:, :90].mean() > f.mel[:, 120:].mean()
    assert np.unique(f.mel[:, 120:]).size == 1


def test_resampling_and_stereo_give_the_same_features(extractor):
    mono16 = extractor(tone(1.0, 16000), 16000)
    resampled = extractor(tone(1.0, 22050), 22050)
    stereo = extractor(np.stack([tone(1.0, 16000)] * 2, axis=1), 16000)
    assert resampled.n_samples == 16000
    assert np.abs(resampled.mel[:, 5:95] - mono16.mel[:, 5:95]).mean() < 0.05
    np.testing.assert_allclose(stereo.mel, mono16.mel, atol=1e-6)


def test_more_mels_follow_the_config():
    f = LogMelExtractor(AudioInputConfig(max_seconds=1.0, n_mels=128))(tone(0.5, 16000), 16000)
    assert f.mel.shape == (128, 100)


def test_speech_features_cover_exactly_the_positions_of_the_clip():
    seen = []

    def encoder(mel: torch.Tensor) -> torch.Tensor:  # the frozen encoder's contract: [M, F] → [F / 2, D]
        seen.append(mel.shape)
        return torch.zeros(mel.shape[1] // 2, 5)

    f = SpeechFeatureExtractor(CFG, encoder)(tone(0.7, 16000), 16000)
    assert f.n_positions == CFG.n_positions(int(0.7 * 16000)) == 9
    assert seen == [(CFG.n_mels, 2 * CFG.projector_stride * 9)]  # the clip's own frames, not the window
    assert f.frames.shape == (CFG.projector_stride * 9, 5) and f.frames.dtype == np.float32


def test_bad_audio_raises(extractor):
    with pytest.raises(ValueError, match="exceeds the encoder window"):
        extractor(tone(2.5, 16000), 16000)
    with pytest.raises(ValueError, match="empty"):
        extractor(np.zeros(0, dtype=np.float32), 16000)
    bad = tone(0.5, 16000)
    bad[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        extractor(bad, 16000)
    with pytest.raises(ValueError, match="16 kHz"):
        LogMelExtractor(AudioInputConfig(sample_rate=8000))
