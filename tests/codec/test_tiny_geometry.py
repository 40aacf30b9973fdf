"""The tiny preset's geometry (two levels, strides 2 / 1: 3 codes per 42.7 ms) encodes, decodes and streams."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deeptalk.codec.config import CodecConfig
from deeptalk.codec.embedded import EmbeddedCodec


@pytest.fixture(scope="module")
def tiny_codec(speech) -> EmbeddedCodec:
    config = dataclasses.replace(
        CodecConfig.for_profile("tiny"), codebook_size=64, kmeans_iters=4, griffin_lim_iters=8
    )
    return EmbeddedCodec.fit(speech[:-2], config, seed=0)


def test_three_streams_at_twice_the_frame_rate(tiny_codec, speech):
    wav, sr = speech[0]
    codes = tiny_codec.encode(wav, sr)
    n_samples = round(len(wav) * tiny_codec.sample_rate / sr)
    assert codes.shape == (3, -(-n_samples // 1024))
    assert tiny_codec.frames_per_second == pytest.approx(24000 / 1024)
    audio = tiny_codec.decode(codes)
    assert 0 <= len(audio) - n_samples < 1024 and np.isfinite(audio).all()


@pytest.mark.parametrize("step", [1, 3])
def test_streaming_equals_offline(tiny_codec, speech, step):
    codes = tiny_codec.encode(*speech[1])
    offline = tiny_codec.decode(codes)
    stream = tiny_codec.decode_stream()
    parts = [stream.push(codes[:, i : i + step]) for i in range(0, codes.shape[1], step)]
    parts.append(stream.flush())
    np.testing.assert_allclose(np.concatenate(parts), offline, rtol=0, atol=1e-6)
