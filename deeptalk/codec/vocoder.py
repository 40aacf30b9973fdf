"""From quantised log-mel frames to a waveform: a learned linear spectrum decoder plus streaming Griffin-Lim.

``SpectrumDecoder`` is ridge regression (closed form, seconds on CPU) from a window of ``2·context+1``
quantised log-mel frames to the *original* log-magnitude spectrum, so it learns both the mel→linear inverse
and part of the quantisation error for the voice it was fitted on.

``StreamingGriffinLim`` is Griffin-Lim run chunk by chunk (in the spirit of RTISI-LA): chunk ``k`` solves the
phases of frames ``[kF, (k+1)F + A)`` with the last ``L`` emitted frames frozen as a boundary condition and
emits blocks ``[kF, (k+1)F)``. Chunk boundaries are fixed frame indices and initial phases depend only on
the frame index, so the output does not depend on how the input was split across ``push`` calls — the
offline decode *is* this computation run to the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeptalk.codec.spectral import OVERLAP, frame_blocks, hann, overlap_add

PHASE_INITS = ("rtisi", "random")


def context_windows(frames: np.ndarray, context: int, first: int, n_out: int, ended: bool) -> np.ndarray:
    """Stack frames ``i-context .. i+context`` for ``i`` in ``[first, first+n_out)``; indices clamp at ends.

    ``frames`` holds every frame known so far (absolute index = row). The right end clamps only when the
    utterance has ``ended``; otherwise callers ask only for frames whose right context exists.
    """
    idx = np.arange(first, first + n_out)[:, None] + np.arange(-context, context + 1)[None, :]
    if not ended and idx.size and idx.max() >= len(frames):
        raise ValueError(f"frame {idx.max()} needed as right context but only {len(frames)} are known")
    idx = np.clip(idx, 0, len(frames) - 1)
    return frames[idx].reshape(n_out, -1)


@dataclass
class SpectrumDecoder:
    """``log_mag = [window, 1] @ weight``; ``weight`` is ``[(2·context+1)·n_mels + 1, n_freq]``."""

    weight: np.ndarray
    context: int
    log_floor: float

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = np.concatenate([windows, np.ones((len(windows), 1), np.float32)], axis=1)
        return np.clip(x @ self.weight, self.log_floor, 4.0).astype(np.float32)

    @classmethod
    def fit(
        cls,
        inputs: list[np.ndarray],
        targets: list[np.ndarray],
        context: int,
        ridge: float,
        log_floor: float,
        max_frames: int,
        rng: np.random.Generator,
    ) -> SpectrumDecoder:
        """Least squares from windows of ``inputs`` (per utterance) to ``targets`` (same frames)."""
        xs = [context_windows(u, context, 0, len(u), ended=True) for u in inputs]
        x = np.concatenate(xs).astype(np.float64)
        y = np.concatenate(targets).astype(np.float64)
        if len(x) > max_frames:
            keep = rng.choice(len(x), max_frames, replace=False)
            x, y = x[keep], y[keep]
        x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        gram = x.T @ x
        reg = ridge * len(x) * np.eye(len(gram))
        reg[-1, -1] = 0.0  # do not shrink the bias
        weight = np.linalg.solve(gram + reg, x.T @ y)
        return cls(weight.astype(np.float32), context, log_floor)


class StreamingGriffinLim:
    """Chunked Griffin-Lim over log-magnitude frames; see the module docstring for the schedule."""

    def __init__(
        self,
        n_fft: int,
        hop: int,
        chunk: int,
        left: int,
        lookahead: int,
        iters: int,
        momentum: float,
        phase_init: str = "rtisi",
        seed: int = 0,
    ) -> None:
        if n_fft != OVERLAP * hop:
            raise ValueError(f"n_fft must be {OVERLAP} × hop, got {n_fft} and {hop}")
        self.n_fft, self.hop, self.chunk, self.left, self.lookahead = n_fft, hop, chunk, left, lookahead
        if phase_init not in PHASE_INITS:
            raise ValueError(f"phase_init {phase_init!r} unknown; expected one of {PHASE_INITS}")
        self.iters, self.momentum, self.phase_init, self.seed = iters, momentum, phase_init, seed
        self.window = hann(n_fft).astype(np.float32)
        self.reset()

    def reset(self) -> None:
        self.mags: list[np.ndarray] = []  # chunks of target magnitudes, concatenated lazily
        self.n_frames = 0
        self.solved: dict[int, np.ndarray] = {}  # frame index → complex spectrum (left context + look-ahead)
        self.next_chunk = 0

    def _mag(self) -> np.ndarray:
        if len(self.mags) > 1:
            self.mags = [np.concatenate(self.mags)]
        return self.mags[0] if self.mags else np.zeros((0, self.n_fft // 2 + 1))

    def _initial(self, frame: int, mag: np.ndarray) -> np.ndarray:
        """Random phase seeded by the frame index (only the very first frames, or ``phase_init="random"``)."""
        phase = np.random.default_rng((self.seed, frame)).uniform(-np.pi, np.pi, mag.shape[0])
        return (mag * np.exp(1j * phase)).astype(np.complex64)

    def _rtisi_initial(
        self, first: int, start: int, mag: np.ndarray, known: list[np.ndarray], wsum: np.ndarray
    ) -> np.ndarray:
        """Initial spectra of the chunk's frames: warm starts where solved, else RTISI-style phases.

        A new frame takes the phase of the signal that the frames before it already overlap-add to under
        its window (Zhu et al., real-time iterative spectrogram inversion), which continues their phase
        instead of starting from noise.
        """
        spec = np.empty((len(mag), mag.shape[1]), dtype=np.complex64)
        blocks = np.zeros_like(wsum)
        frames = list(known)  # frozen left-context frames, in order
        for i in range(start - first):
            blocks[i : i + 4] += (np.fft.irfft(frames[i], n=self.n_fft) * self.window).reshape(4, self.hop)
        for i in range(len(mag)):
            f, seg = start + i, start - first + i
            if f in self.solved:
                spec[i] = self.solved[f]
            elif seg == 0 or self.phase_init == "random":
                spec[i] = self._initial(f, mag[i])
            else:
                partial = np.fft.rfft((blocks[seg : seg + 4] / wsum[seg : seg + 4]).reshape(-1) * self.window)
                spec[i] = partial * (mag[i] / np.maximum(np.abs(partial), 1e-12))
            blocks[seg : seg + 4] += (np.fft.irfft(spec[i], n=self.n_fft) * self.window).reshape(4, self.hop)
        return spec

    def push(self, log_mag: np.ndarray, ended: bool) -> np.ndarray:
        """Add frames; return the waveform blocks that became final (all of them when ``ended``)."""
        if len(log_mag):
            self.mags.append(np.exp(log_mag.astype(np.float32)))
            self.n_frames += len(log_mag)
        out = []
        while True:
            start = self.next_chunk * self.chunk
            stop = start + self.chunk + self.lookahead
            if stop > self.n_frames:
                if not ended or start >= self.n_frames:
                    break
                stop = self.n_frames
            out.append(self._solve_chunk(start, stop, emit_stop=min(start + self.chunk, self.n_frames)))
            self.next_chunk += 1
        if ended:
            self.reset()
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _solve_chunk(self, start: int, stop: int, emit_stop: int) -> np.ndarray:
        mag = self._mag()[start:stop]
        first = max(0, start - self.left)
        known = [self.solved[f] for f in range(first, start)]
        frozen = np.stack(known) if known else None
        n_frozen = start - first
        wsum = overlap_add(np.tile(self.window**2, (stop - first, 1)), self.hop)
        wsum = np.maximum(wsum, 1e-6).astype(np.float32)
        spec = self._rtisi_initial(first, start, mag, known, wsum)
        # the frozen frames' overlap-add never changes: synthesise it once
        fixed = np.zeros_like(wsum)
        if frozen is not None:
            fixed[: n_frozen + OVERLAP - 1] = self._overlap(frozen)
        prev = spec
        for _ in range(self.iters):
            blocks = fixed.copy()
            blocks[n_frozen:] += self._overlap(spec)
            rebuilt = np.fft.rfft(frame_blocks(blocks[n_frozen:] / wsum[n_frozen:]) * self.window, axis=1)
            proj = rebuilt * (
                mag / np.maximum(np.abs(rebuilt), 1e-12)
            )  # keep the phase, impose the magnitude
            spec = proj + self.momentum * (proj - prev) if self.momentum else proj
            prev = proj
        spec = spec * (mag / np.maximum(np.abs(spec), 1e-12))
        blocks = fixed.copy()
        blocks[n_frozen:] += self._overlap(spec)
        blocks /= wsum
        full = spec if frozen is None else np.concatenate([frozen, spec])
        # keep what the next chunk needs: the last `left` emitted frames and this chunk's look-ahead
        self.solved = {f: full[f - first] for f in range(max(first, emit_stop - self.left), stop)}
        offset = first - (OVERLAP // 2)  # absolute index of blocks[0]
        return blocks[start - offset : emit_stop - offset].reshape(-1)

    def _overlap(self, spec: np.ndarray) -> np.ndarray:
        """Windowed inverse FFT of ``spec`` frames, overlap-added into blocks (not yet normalised)."""
        return overlap_add(np.fft.irfft(spec, n=self.n_fft, axis=1) * self.window, self.hop)
