"""Client audio in: uploaded wav/flac bytes or raw PCM → 16 kHz mono float32, with the errors clients see.

Formats are recognised from the bytes themselves (a declared content type can lie): RIFF/WAVE, RF64 and
FLAC, any sample rate or channel count, are mixed to mono and resampled with soxr; anything else is a 415.
"""

from __future__ import annotations

import io
import re

import numpy as np
import soundfile as sf

from deeptalk.data.audio_io import resample


class AudioInputError(ValueError):
    """Bad client audio; ``status`` is the HTTP status the service answers with."""

    status = 400
    code = "bad_audio"


class EmptyAudio(AudioInputError):
    code = "empty_audio"


class CorruptAudio(AudioInputError):
    code = "corrupt_audio"


class UnsupportedAudioFormat(AudioInputError):
    status = 415
    code = "unsupported_media_type"


class AudioTooLarge(AudioInputError):
    status = 413
    code = "too_large"


def sniff_format(data: bytes) -> str:
    """``"wav"`` or ``"flac"`` from the file's magic bytes; raises UnsupportedAudioFormat otherwise."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    raise UnsupportedAudioFormat("unsupported audio format: send WAV or FLAC (any sample rate, any channels)")


def load_upload(data: bytes, *, max_bytes: int, max_seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Decode an uploaded WAV/FLAC file into mono float32 at ``sample_rate``, enforcing the limits."""
    if not data:
        raise EmptyAudio("the audio upload is empty")
    if len(data) > max_bytes:
        raise AudioTooLarge(f"the upload has {len(data)} bytes; the limit is {max_bytes}")
    fmt = sniff_format(data)
    if fmt == "wav":
        check_wav_chunks(data)
    try:
        info = sf.info(io.BytesIO(data))
        if info.frames <= 0:
            raise EmptyAudio(f"the {fmt} file holds no samples")
        if info.frames / info.samplerate > max_seconds:
            raise AudioTooLarge(
                f"the audio lasts {info.frames / info.samplerate:.2f} s; the limit is {max_seconds} s"
            )
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except AudioInputError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as err:
        raise CorruptAudio(f"the {fmt} file could not be decoded: {_reason(err)}") from err
    if wav.shape[0] == 0:
        raise EmptyAudio(f"the {fmt} file holds no samples")
    if wav.shape[0] != info.frames:  # e.g. a FLAC whose STREAMINFO counts more samples than its frames hold
        raise CorruptAudio(
            f"the {fmt} header declares {info.frames} samples but the file holds {wav.shape[0]}; "
            "the upload is truncated or its header is wrong"
        )
    return _finish(wav.mean(axis=1), sr, sample_rate)


def check_wav_chunks(data: bytes) -> None:
    """Refuse a RIFF/WAVE file whose declared sizes disagree with its bytes: libsndfile would silently read
    what is there (a truncated upload would be answered as if it were the whole question).

    Checks the RIFF size (truncation), every chunk's size against the bytes left, and the data chunk against
    the frame size of the fmt chunk. RF64 files and streaming writers' "unknown" sizes (0xFFFFFFFF) are left
    to libsndfile."""
    if data[:4] != b"RIFF":
        return
    riff = int.from_bytes(data[4:8], "little")
    if riff != 0xFFFFFFFF and riff + 8 > len(data):
        raise CorruptAudio(
            f"the WAV header declares {riff + 8} bytes but the upload has {len(data)}; it is truncated"
        )
    pos, block_align = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        left = len(data) - pos - 8
        name = chunk.decode("ascii", "replace").strip()
        if chunk == b"fmt " and size >= 14 and left >= 14:
            block_align = int.from_bytes(data[pos + 20 : pos + 22], "little")
        if chunk == b"data":
            if size == 0xFFFFFFFF:
                return
            if size > left:
                raise CorruptAudio(
                    f"the WAV data chunk declares {size} bytes but only {left} follow; the upload is truncated"
                )
            if block_align and size % block_align:
                raise CorruptAudio(
                    f"the WAV data chunk has {size} bytes, not a whole number of {block_align}-byte sample frames"
                )
            return
        if size > left:
            raise CorruptAudio(f"the WAV chunk {name!r} declares {size} bytes but only {left} follow")
        pos += 8 + size + (size & 1)
    # no data chunk: libsndfile names what is wrong with the file


def _reason(err: Exception) -> str:
    """libsndfile's own words; its exception text names the in-memory file by its Python repr."""
    reason = getattr(err, "error_string", None) or str(err)
    return re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "the upload", reason)


def load_pcm16(data: bytes, sr: int, *, max_seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Raw little-endian 16-bit mono PCM (the realtime protocol's audio) → float32 at ``sample_rate``."""
    if not data:
        raise EmptyAudio("no audio samples")
    if len(data) % 2:
        raise CorruptAudio("PCM16 audio must have an even number of bytes")
    if not 8000 <= sr <= 96000:
        raise CorruptAudio(f"input sample rate {sr} Hz is outside [8000, 96000]")
    wav = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if wav.size / sr > max_seconds:
        raise AudioTooLarge(f"the audio lasts {wav.size / sr:.2f} s; the limit is {max_seconds} s")
    return _finish(wav, sr, sample_rate)


def _finish(wav: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    if not np.isfinite(wav).all():
        raise CorruptAudio("the audio contains NaN or infinite samples")
    out = resample(np.ascontiguousarray(wav, dtype=np.float32), int(sr), sample_rate)
    if out.size == 0:
        raise EmptyAudio("the audio is too short to resample")
    return out
