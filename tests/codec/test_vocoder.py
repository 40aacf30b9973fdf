import numpy as np
import pytest

from deeptalk.codec.spectral import frame_blocks, overlap_add, stft
from deeptalk.codec.vocoder import StreamingGriffinLim, context_windows


def _tone(n_frames=40, hop=128):
    t = np.arange(n_frames * hop) / 8000
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)).astype(np.float32)


def test_frames_and_overlap_add_are_inverse_layouts():
    blocks = np.random.default_rng(0).normal(size=(11, 4))
    frames = frame_blocks(blocks)
    assert frames.shape == (8, 16)
    ones = overlap_add(np.ones((8, 16)), 4)
    np.testing.assert_array_equal(overlap_add(frames, 4), blocks * ones)


def test_griffin_lim_recovers_magnitudes():
    hop, n_fft = 128, 512
    wav = _tone(hop=hop)
    mag = np.abs(stft(wav, n_fft, hop, 40))
    gl = StreamingGriffinLim(n_fft, hop, chunk=8, left=8, lookahead=2, iters=32, momentum=0.0)
    out = gl.push(np.log(np.maximum(mag, 1e-7)), ended=True)
    assert len(out) == 40 * hop
    rebuilt = np.abs(stft(out, n_fft, hop, 40))
    inner = slice(2, -2)
    rel = np.linalg.norm(rebuilt[inner] - mag[inner]) / np.linalg.norm(mag[inner])
    assert rel < 0.2


def test_chunking_of_input_does_not_change_output():
    hop, n_fft = 128, 512
    log_mag = np.log(np.maximum(np.abs(stft(_tone(hop=hop), n_fft, hop, 40)), 1e-7))
    make = lambda: StreamingGriffinLim(n_fft, hop, chunk=8, left=8, lookahead=2, iters=8, momentum=0.5)  # noqa: E731
    whole = make().push(log_mag, ended=True)
    gl = make()
    parts = [gl.push(log_mag[i : i + 3], ended=False) for i in range(0, 40, 3)] + [
        gl.push(log_mag[:0], ended=True)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_context_windows_clamp_at_the_ends():
    frames = np.arange(5, dtype=np.float32)[:, None]
    w = context_windows(frames, 1, 0, 5, ended=True)
    assert w[:, 0].tolist() == [0, 0, 1, 2, 3] and w[:, 2].tolist() == [1, 2, 3, 4, 4]
    with pytest.raises(ValueError, match="right context"):
        context_windows(frames, 1, 4, 1, ended=False)
