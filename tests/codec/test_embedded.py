import numpy as np
import pytest
import torch

from deeptalk.codec.base import Codec, StreamingDecoder
from deeptalk.codec.embedded import EmbeddedCodec
from deeptalk.codec.registry import load_codec
from deeptalk.codec.spectral import log_spectra, mel_filterbank


def test_encode_shape_and_range(codec, speech):
    wav, sr = speech[0]
    codes = codec.encode(wav, sr)
    n_samples = round(len(wav) * codec.sample_rate / sr)
    assert isinstance(codec, Codec)
    assert codes.dtype == torch.int64
    assert codes.shape == (7, -(-n_samples // 2048))
    assert 0 <= int(codes.min()) and int(codes.max()) < codec.codebook_size
    assert codec.frames_per_second == pytest.approx(24000 / 2048)


def test_decode_length_matches_input(codec, speech):
    wav, sr = speech[1]
    audio = codec.decode(codec.encode(wav, sr))
    assert audio.dtype == np.float32 and audio.ndim == 1
    expected = len(wav) * codec.sample_rate / sr
    assert 0 <= len(audio) - expected < 2048  # padded up to whole 85 ms frames, never truncated
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


def _mel_distance(codec, a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b)) // codec.config.hop
    fb = mel_filterbank(codec.sample_rate, codec.config.n_fft, codec.config.n_mels, 0.0, 12000.0)
    ma, _ = log_spectra(a / np.abs(a).max(), codec.config.n_fft, codec.config.hop, n, fb, -7.0)
    mb, _ = log_spectra(b / np.abs(b).max(), codec.config.n_fft, codec.config.hop, n, fb, -7.0)
    return float(np.mean(np.abs(ma - mb)))


def test_resynthesis_resembles_its_input(codec, speech):
    """The decoded spectrogram is much closer to its own input than to another sentence's."""
    import soxr

    held = [soxr.resample(w, sr, codec.sample_rate) for w, sr in speech[-2:]]
    own = _mel_distance(codec, codec.decode(codec.encode(held[0], codec.sample_rate)), held[0])
    other = _mel_distance(codec, codec.decode(codec.encode(held[0], codec.sample_rate)), held[1])
    assert own < 0.75 * other


@pytest.mark.parametrize("step", [1, 2, 3, 5])
def test_streaming_equals_offline(codec, speech, step):
    codes = codec.encode(*speech[2])
    offline = codec.decode(codes)
    stream = codec.decode_stream()
    assert isinstance(stream, StreamingDecoder)
    parts = [stream.push(codes[:, i : i + step]) for i in range(0, codes.shape[1], step)]
    parts.append(stream.flush())
    np.testing.assert_allclose(np.concatenate(parts), offline, rtol=0, atol=1e-6)


def test_streaming_emits_early_with_bounded_lookahead(codec, speech):
    codes = codec.encode(*speech[3])
    stream = codec.decode_stream()
    got, first_at = 0, None
    for i in range(codes.shape[1]):
        out = stream.push(codes[:, i : i + 1])
        got += len(out)
        if len(out) and first_at is None:
            first_at = i + 1
        # audio never runs ahead of the codes, and lags them by at most 5 columns (427 ms): the next column
        # for interpolation, decoder context, one Griffin-Lim chunk and its overlap-add look-ahead
        assert got <= (i + 1) * 2048
        assert got >= (i + 1) * 2048 - 5 * 2048
    assert first_at is not None and first_at <= 5
    stream.flush()
    # flush resets the decoder: the same object decodes a second utterance from scratch
    again = np.concatenate([stream.push(codes), stream.flush()])
    np.testing.assert_array_equal(again, codec.decode(codes))


def test_save_load_round_trip(codec, speech, tmp_path):
    codec.save(tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert isinstance(loaded, EmbeddedCodec) and loaded.config == codec.config
    wav, sr = speech[4]
    codes = codec.encode(wav, sr)
    assert torch.equal(loaded.encode(wav, sr), codes)
    np.testing.assert_array_equal(loaded.decode(codes), codec.decode(codes))


def test_resamples_other_rates(codec, speech):
    import soxr

    wav, sr = speech[5]
    at_16k = soxr.resample(wav, sr, 16000)
    codes = codec.encode(at_16k, 16000)
    assert codes.shape[1] == -(-round(len(at_16k) * 1.5) // 2048)


@pytest.mark.parametrize(
    ("wav", "message"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.1, np.nan, 0.2] * 100, np.float32), "NaN"),
        (np.zeros((2, 500), np.float32), "mono"),
    ],
)
def test_bad_audio_is_rejected(codec, wav, message):
    with pytest.raises(ValueError, match=message):
        codec.encode(wav, 24000)


def test_bad_sample_rate_is_rejected(codec):
    with pytest.raises(ValueError, match="sample rate"):
        codec.encode(np.zeros(1000, np.float32), 0)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.zeros(6, 4, dtype=torch.long), "shape"),
        (torch.full((7, 4), 64, dtype=torch.long), "out of range"),
        (torch.full((7, 4), -1, dtype=torch.long), "out of range"),
        (torch.zeros(7, 4), "integers"),
        (torch.zeros(7, dtype=torch.long), "shape"),
    ],
)
def test_bad_codes_are_rejected(codec, codes, message):
    with pytest.raises(ValueError, match=message):
        codec.decode(codes)
    with pytest.raises(ValueError, match=message):
        codec.decode_stream().push(codes)


def test_fit_is_deterministic(speech, small_config):
    a = EmbeddedCodec.fit(speech[:3], small_config, seed=3)
    b = EmbeddedCodec.fit(speech[:3], small_config, seed=3)
    for ca, cb in zip(a.quantizer.codebooks, b.quantizer.codebooks, strict=True):
        np.testing.assert_array_equal(ca, cb)


def test_fit_without_audio_fails(small_config):
    with pytest.raises(ValueError, match="no audio"):
        EmbeddedCodec.fit([], small_config)


def test_edge_lengths(codec):
    assert codec.decode(torch.zeros(7, 0, dtype=torch.long)).shape == (0,)
    codes = codec.encode(np.zeros(1, np.float32), 24000)  # one sample still makes one whole frame
    assert codes.shape == (7, 1) and codec.decode(codes).shape == (2048,)
    assert codec.decode_stream().flush().shape == (0,)
