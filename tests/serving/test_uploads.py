import numpy as np
import pytest

from deeptalk.serving.uploads import (
    AudioTooLarge,
    CorruptAudio,
    EmptyAudio,
    UnsupportedAudioFormat,
    load_pcm16,
    load_upload,
    sniff_format,
)
from tests.serving.bad_inputs import CORRUPT_WAV, NAN_WAV, wav_bytes

LIMITS = {"max_bytes": 1_000_000, "max_seconds": 3.0}


@pytest.mark.parametrize(
    "sr,channels,fmt", [(8000, 1, "WAV"), (44100, 2, "WAV"), (22050, 1, "FLAC"), (48000, 2, "FLAC")]
)
def test_wav_and_flac_any_rate_and_channels_become_16k_mono(sr, channels, fmt):
    wav = load_upload(wav_bytes(0.5, sr, channels, fmt), **LIMITS)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 8000) <= 2
    assert 0.2 < np.abs(wav).max() < 0.35  # channels averaged, not summed


def test_errors_name_the_problem():
    with pytest.raises(EmptyAudio):
        load_upload(b"", **LIMITS)
    with pytest.raises(UnsupportedAudioFormat) as e:
        load_upload(b"ID3" + b"\x00" * 100, **LIMITS)
    assert e.value.status == 415
    with pytest.raises(CorruptAudio):
        load_upload(CORRUPT_WAV, **LIMITS)
    with pytest.raises(CorruptAudio, match="NaN"):
        load_upload(NAN_WAV, **LIMITS)
    with pytest.raises(AudioTooLarge, match="lasts"):
        load_upload(wav_bytes(4.0, 8000), **LIMITS)
    with pytest.raises(AudioTooLarge, match="bytes"):
        load_upload(wav_bytes(1.0), max_bytes=100, max_seconds=3.0)
    assert sniff_format(wav_bytes(fmt="FLAC")) == "flac"


def test_pcm16_realtime_audio():
    pcm = (np.sin(np.arange(24000) / 10) * 10000).astype("<i2").tobytes()
    wav = load_pcm16(pcm, 24000, max_seconds=3.0)
    assert abs(len(wav) - 16000) <= 2
    with pytest.raises(CorruptAudio):
        load_pcm16(pcm[:-1], 24000, max_seconds=3.0)
    with pytest.raises(EmptyAudio):
        load_pcm16(b"", 16000, max_seconds=3.0)
    with pytest.raises(AudioTooLarge):
        load_pcm16(pcm * 4, 16000, max_seconds=3.0)


def _with_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(4, "little") + data[offset + 4 :]


def test_container_sizes_that_disagree_with_the_data_are_refused_by_name():
    wav = wav_bytes(0.5)  # 16-bit mono: RIFF size at 4, data chunk size at 40, 16,000 data bytes
    with pytest.raises(CorruptAudio, match="declares 16044 bytes but the upload has 8022; it is truncated"):
        load_upload(wav[: len(wav) // 2], **LIMITS)
    # RIFF size made consistent, the data chunk still claims more than follows
    cut = _with_u32(wav[:8044], 4, 8036)
    with pytest.raises(CorruptAudio, match="data chunk declares 16000 bytes but only 8000 follow"):
        load_upload(cut, **LIMITS)
    with pytest.raises(CorruptAudio, match="not a whole number of 2-byte sample frames"):
        load_upload(_with_u32(wav, 40, 15999), **LIMITS)
    assert len(load_upload(wav + b"\x00" * 100, **LIMITS)) == 8000  # trailing bytes after the data: accepted
    flac = wav_bytes(0.5, fmt="FLAC")  # STREAMINFO total samples: 36 bits ending at byte 8 + 18
    total = int.from_bytes(flac[21:26], "big")
    lying = flac[:21] + (total + 4000).to_bytes(5, "big") + flac[26:]
    with pytest.raises(CorruptAudio, match="flac"):  # libsndfile refuses it; no partial decode is answered
        load_upload(lying, **LIMITS)
