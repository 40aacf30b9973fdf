"""The codec contract shared by every codec kind, plus input checks and the SNAC 7-row frame layout.

A code matrix is ``LongTensor[K, T]``: one column per coarse frame (~85 ms), rows in SNAC order
``[c12, c24a, c24b, c48a, c48b, c48c, c48d]`` (``paper.md`` §1.3). Residual level ``l`` with ``m`` codes per
coarse frame occupies ``m`` consecutive rows; ``levels_to_rows`` / ``rows_to_levels`` convert.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import soxr
import torch

if TYPE_CHECKING:
    from deeptalk.codec.config import CodecConfig


@runtime_checkable
class StreamingDecoder(Protocol):
    """Chunked decoding: ``push`` returns the audio that became final; ``flush`` returns the rest.

    The concatenation of every ``push`` output and the ``flush`` output equals ``Codec.decode`` of all codes.
    """

    def push(self, codes: torch.Tensor) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...

    def reset(self) -> None: ...


@runtime_checkable
class Codec(Protocol):
    kind: str
    sample_rate: int
    n_streams: int
    codebook_size: int
    frames_per_second: float

    def encode(self, wav: np.ndarray, sr: int) -> torch.Tensor: ...

    def decode(self, codes: torch.Tensor) -> np.ndarray: ...

    def decode_stream(self) -> StreamingDecoder: ...

    def save(self, path: str | Path) -> None: ...


def check_wav(wav: np.ndarray | torch.Tensor, sr: int, target_sr: int) -> np.ndarray:
    """A finite, non-empty mono float32 waveform at ``target_sr`` (resampled with soxr when needed)."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav)
    if wav.ndim == 2 and 1 in wav.shape:
        wav = wav.reshape(-1)
    if wav.ndim != 1:
        raise ValueError(f"wav must be mono 1-D audio, got shape {tuple(wav.shape)}")
    if wav.size == 0:
        raise ValueError("wav is empty: nothing to encode")
    if not np.issubdtype(wav.dtype, np.number):
        raise ValueError(f"wav must be numeric, got dtype {wav.dtype}")
    if np.issubdtype(wav.dtype, np.integer):  # PCM: scale to [-1, 1]
        wav = wav.astype(np.float32) / float(np.iinfo(wav.dtype).max)
    wav = wav.astype(np.float32, copy=False)
    if not np.isfinite(wav).all():
        raise ValueError("wav contains NaN or infinite samples")
    if not isinstance(sr, int | np.integer) or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr!r}")
    if sr != target_sr:
        wav = soxr.resample(wav, int(sr), int(target_sr)).astype(np.float32)
    return wav


def check_codes(codes: torch.Tensor | np.ndarray, n_streams: int, codebook_size: int) -> np.ndarray:
    """Validate a ``[K, T]`` code matrix and return it as int64 numpy."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != n_streams:
        raise ValueError(f"codes must have shape [K={n_streams}, T], got {tuple(codes.shape)}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    codes = codes.astype(np.int64, copy=False)
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        bad = codes[(codes < 0) | (codes >= codebook_size)]
        raise ValueError(
            f"codes out of range [0, {codebook_size}): found {bad[:5].tolist()} "
            "(specials must be removed first)"
        )
    return codes


def codes_per_frame(level_strides: tuple[int, ...]) -> list[int]:
    """Codes per coarse frame on each level, e.g. strides (4, 2, 1) → [1, 2, 4]."""
    return [level_strides[0] // s for s in level_strides]


def levels_to_rows(levels: list[np.ndarray], level_strides: tuple[int, ...]) -> np.ndarray:
    """Per-level code sequences (level l has T·m_l codes in time order) → ``[K, T]`` rows (SNAC order)."""
    per = codes_per_frame(level_strides)
    n_frames = len(levels[0])
    rows = []
    for codes, m in zip(levels, per, strict=True):
        if len(codes) != n_frames * m:
            raise ValueError(f"level with {m} codes per frame has {len(codes)} codes for {n_frames} frames")
        rows.append(np.asarray(codes).reshape(n_frames, m).T)
    return np.concatenate(rows, axis=0)


def rows_to_levels(rows: np.ndarray, level_strides: tuple[int, ...]) -> list[np.ndarray]:
    """Inverse of ``levels_to_rows``: ``[K, T]`` → per-level codes in time order."""
    levels, start = [], 0
    for m in codes_per_frame(level_strides):
        levels.append(np.ascontiguousarray(rows[start : start + m].T).reshape(-1))
        start += m
    return levels


class ConfiguredCodec:
    """What the codecs share: geometry read from ``self.config``, and an offline ``decode`` that *is* the
    streaming decode run to the end, so the two can never disagree."""

    config: CodecConfig

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def n_streams(self) -> int:
        return self.config.n_streams

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def frames_per_second(self) -> float:
        return self.config.frames_per_second

    @property
    def samples_per_coarse(self) -> int:
        return self.config.samples_per_coarse

    def decode_stream(self) -> StreamingDecoder:
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """Waveform of ``T · samples_per_coarse`` samples for codes ``[K, T]``."""
        stream = self.decode_stream()
        head = stream.push(codes)
        return np.concatenate([head, stream.flush()])
