"""Wav reading/writing and resampling with soundfile + soxr (torchaudio does not load beside torch 2.13)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

# the manifests' checksum column is a content digest like any other (deeptalk.identity); named here for the data code
from deeptalk.identity import bytes_digest as sha256_bytes  # noqa: F401
from deeptalk.identity import file_digest as sha256_file  # noqa: F401


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Mono float32 resampling (soxr 'HQ'); returns the input unchanged when the rates agree."""
    wav = np.asarray(wav, dtype=np.float32)
    if sr_in == sr_out:
        return wav
    return soxr.resample(wav, sr_in, sr_out, quality="HQ").astype(np.float32)


def to_mono(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    return wav.mean(axis=1) if wav.ndim == 2 else wav


def read_wav(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read mono float32, resampled to ``sample_rate`` when given; ValueError if the file is unreadable."""
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from e
    wav = to_mono(wav)
    if sample_rate is not None and sr != sample_rate:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def decode_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return to_mono(wav), sr


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM wav bytes (deterministic: same samples → same bytes)."""
    buf = io.BytesIO()
    sf.write(
        buf,
        np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0),
        sample_rate,
        subtype="PCM_16",
        format="WAV",
    )
    return buf.getvalue()


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> bytes:
    """Write 16-bit PCM mono and return the file's bytes (for hashing without re-reading)."""
    data = wav_bytes(wav, sample_rate)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return data


def rms(wav: np.ndarray) -> float:
    wav = np.asarray(wav, dtype=np.float64)
    return float(np.sqrt(np.mean(wav**2))) if wav.size else 0.0
