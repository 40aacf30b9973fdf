import base64

import numpy as np
import pytest

from deeptalk.inference.events import AudioChunk, Done, TextDelta, Timings, decode_pcm, encode_pcm


@pytest.mark.parametrize("fmt,tol", [("int16", 1 / 32767), ("float32", 0.0)])
def test_pcm_round_trip(fmt, tol):
    pcm = np.sin(np.linspace(0, 20, 1000)).astype(np.float32) * 0.8
    back = decode_pcm(encode_pcm(pcm, fmt), fmt)
    assert np.max(np.abs(back - pcm)) <= tol


def test_wire_forms():
    chunk = AudioChunk(np.array([0.0, 0.5, -1.5], dtype=np.float32), 24000)
    msg = chunk.to_json("int16")
    assert msg["type"] == "audio.delta" and msg["sample_rate"] == 24000 and msg["samples"] == 3
    assert decode_pcm(base64.b64decode(msg["audio"]), "int16").tolist() == pytest.approx(
        [0.0, 0.5, -1.0], abs=1e-4
    )
    assert TextDelta(" hi").to_json() == {"type": "text.delta", "text": " hi"}
    done = Done("hi", "complete", Timings(first_audio_ms=12.0, steps=3)).to_json()
    assert done["type"] == "done" and done["timings"]["first_audio_ms"] == 12.0
    with pytest.raises(ValueError):
        encode_pcm(chunk.pcm, "mp3")
