import numpy as np
import pytest

from deeptalk.data.audio_io import rms
from deeptalk.data.voices import Speaker, synthesize


@pytest.mark.parametrize("speaker", ["espeak:en-us+f3", "flite:slt", "piper:joe"])
def test_every_engine_speaks_deterministically_at_16k(speaker):
    a = synthesize(speaker, "The capital of France is Paris.", speed=150)
    b = synthesize(speaker, "The capital of France is Paris.", speed=150)
    assert a.dtype == np.float32 and a.ndim == 1
    assert 0.8 < len(a) / 16000 < 4.0  # a short sentence, at 16 kHz
    assert rms(a) > 0.01
    assert np.array_equal(a, b)


def test_espeak_speed_changes_duration():
    slow = synthesize("espeak:en-us", "One two three four five six.", speed=120)
    fast = synthesize("espeak:en-us", "One two three four five six.", speed=200)
    assert len(fast) < 0.8 * len(slow)


def test_bad_speakers_and_text_are_rejected():
    with pytest.raises(ValueError, match="engine:voice"):
        Speaker.parse("en-us")
    with pytest.raises(ValueError, match="unknown piper voice"):
        Speaker.parse("piper:amy")
    with pytest.raises(ValueError, match="empty text"):
        synthesize("flite:slt", "  ")
    assert str(Speaker.parse("flite:awb")) == "flite:awb"
