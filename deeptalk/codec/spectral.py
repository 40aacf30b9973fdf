"""Short-time Fourier analysis and synthesis for ``n_fft = 4 · hop`` (75 % overlap).

Frames are centred: frame ``f`` is centred on sample ``f · hop`` and covers the four hop-sized *blocks*
``f-2 .. f+1`` (block ``b`` = samples ``[b·hop, (b+1)·hop)``). Working in blocks makes overlap-add a sum of
four shifted arrays, and makes it obvious which frames a stretch of output needs — the streaming decoder's
look-ahead follows from it.
"""

from __future__ import annotations

import numpy as np

OVERLAP = 4  # n_fft / hop


def hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window (its squares overlap-add to 1.5 at 75 % overlap)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float64)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """HTK-scale triangular filters, area-normalised (Slaney norm): ``[n_mels, n_fft // 2 + 1]``."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"mel range must satisfy 0 <= fmin < fmax <= sr/2, got {fmin}, {fmax}")

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb


def frame_blocks(blocks: np.ndarray) -> np.ndarray:
    """``[n + 3, hop]`` blocks → ``[n, 4·hop]`` frames (frame i = blocks i..i+3)."""
    n = blocks.shape[0] - (OVERLAP - 1)
    return np.concatenate([blocks[j : j + n] for j in range(OVERLAP)], axis=1)


def overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """``[n, 4·hop]`` frames → ``[n + 3, hop]`` blocks (inverse layout of ``frame_blocks``)."""
    n = frames.shape[0]
    out = np.zeros((n + OVERLAP - 1, hop), dtype=frames.dtype)
    for j in range(OVERLAP):
        out[j : j + n] += frames[:, j * hop : (j + 1) * hop]
    return out


def stft(wav: np.ndarray, n_fft: int, hop: int, n_frames: int) -> np.ndarray:
    """Complex STFT ``[n_frames, n_fft // 2 + 1]`` of centred frames (reflect padding at both ends)."""
    need = n_frames * hop
    wav = np.pad(wav.astype(np.float64), (0, max(0, need - len(wav))))[:need]
    half = n_fft // 2
    padded = np.pad(wav, (half, half), mode="reflect" if len(wav) > half else "constant")
    blocks = padded[: (n_frames + OVERLAP - 1) * hop].reshape(-1, hop)
    return np.fft.rfft(frame_blocks(blocks) * hann(n_fft), axis=1)


def log_spectra(
    wav: np.ndarray, n_fft: int, hop: int, n_frames: int, mel_fb: np.ndarray, log_floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel ``[n_frames, n_mels]``, log-magnitude ``[n_frames, n_fft//2+1]``), floored at log_floor."""
    mag = np.abs(stft(wav, n_fft, hop, n_frames))
    floor = np.exp(log_floor)
    log_mel = np.log(np.maximum(mag @ mel_fb.T, floor))
    log_mag = np.log(np.maximum(mag, floor))
    return log_mel.astype(np.float32), log_mag.astype(np.float32)
