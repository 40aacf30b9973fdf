"""Multi-scale residual k-means over spectral frames (SNAC's level structure, fitted instead of learned).

Level ``l`` averages the current residual over blocks of ``stride_l`` frames, picks the nearest of its
codebook's vectors, spreads the chosen vectors back over the frames by *linear interpolation between block
centres* (holding the end values), and subtracts them. Interpolation instead of repetition removed the blocky
steps that Griffin-Lim turned into noise (``STACK.md``); its price is that a frame is final only once the next
coarse block's codes are known (see ``frames_final``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)


def nearest(x: np.ndarray, codebook: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Index of the nearest codebook row (squared Euclidean) for every row of ``x``."""
    cb = torch.from_numpy(np.ascontiguousarray(codebook, dtype=np.float32))
    cb_sq = (cb * cb).sum(1)
    out = np.empty(len(x), dtype=np.int64)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for i in range(0, len(x), batch):
        d = cb_sq[None, :] - 2.0 * xt[i : i + batch] @ cb.T
        out[i : i + batch] = d.argmin(1).numpy()
    return out


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, sample: int = 2) -> np.ndarray:
    """k-means++ seeding (D² sampling) on a random subset of ``sample · k`` points (bounds its k passes).

    Random-sample seeding leaves pairs of codes in one cluster that Lloyd iterations never separate.
    """
    if len(x) > sample * k:
        x = x[rng.choice(len(x), sample * k, replace=False)]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (xt * xt).sum(1)
    picks = np.empty(k, dtype=np.int64)
    picks[0] = rng.integers(len(x))
    d2 = (sq - 2.0 * xt @ xt[picks[0]] + sq[picks[0]]).clamp_min_(0.0)
    draws = rng.random(k)
    for i in range(1, k):
        cum = torch.cumsum(d2, 0)
        total = float(cum[-1])
        if total > 0:
            j = min(int(torch.searchsorted(cum, torch.tensor([draws[i] * total]))[0]), len(x) - 1)
        else:  # every point is already a centre
            j = int(rng.integers(len(x)))
        picks[i] = j
        torch.minimum(d2, (sq - 2.0 * xt @ xt[j] + sq[j]).clamp_min_(0.0), out=d2)
    return np.ascontiguousarray(x[picks], dtype=np.float32)


def kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator, desc: str = "k-means") -> np.ndarray:
    """Lloyd's k-means from k-means++ seeds; empty clusters are re-seeded with the worst-fit points.

    With fewer points than ``k`` every point becomes a code and the remaining rows repeat them (codes that
    the encoder never picks), so the codebook size — part of the token layout — never depends on data size.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        raise ValueError("k-means got no training vectors")
    if n <= k:
        log.warning("%s: only %d vectors for %d codes; %d codes repeat others", desc, n, k, k - n)
        return np.concatenate([x, x[rng.integers(0, n, k - n)]], axis=0) if n < k else x.copy()
    centres = kmeans_plus_plus(x, k, rng)
    xt = torch.from_numpy(x)
    for _ in tqdm(range(iters), desc=desc, leave=False):
        assign = nearest(x, centres)
        at = torch.from_numpy(assign)
        sums = torch.zeros(k, x.shape[1]).index_add_(0, at, xt)
        counts = torch.bincount(at, minlength=k).float()
        nonempty = counts > 0
        centres_t = torch.from_numpy(centres)
        centres_t[nonempty] = sums[nonempty] / counts[nonempty, None]
        n_empty = int((~nonempty).sum())
        if n_empty:
            err = ((xt - centres_t[at]) ** 2).sum(1)
            worst = torch.topk(err, min(n_empty, n)).indices
            centres_t[~nonempty] = xt[worst]
        centres = centres_t.numpy()
    return centres.astype(np.float32)


@dataclass
class ResidualQuantizer:
    """Codebooks ``[codebook_size, dim]`` per level, coarsest first, with their frame strides."""

    strides: tuple[int, ...]
    codebooks: list[np.ndarray]

    @property
    def dim(self) -> int:
        return self.codebooks[0].shape[1]

    @staticmethod
    def spread(values: np.ndarray, first_block: int, stride: int, frames: np.ndarray) -> np.ndarray:
        """Values of blocks ``first_block ..`` at absolute ``frames``, interpolated between block centres.

        Frames outside the given blocks' centres hold the nearest end value, so callers pass every block
        that brackets the frames they ask for (true only at the utterance ends otherwise).
        """
        if stride == 1:
            return values[frames - first_block]
        pos = (frames - (stride - 1) / 2.0) / stride  # fractional absolute block index
        last = first_block + len(values) - 1
        left = np.clip(np.floor(pos).astype(np.int64), first_block, last)
        right = np.minimum(left + 1, last)
        t = np.clip(pos - left, 0.0, 1.0)[:, None].astype(np.float32)
        return (1.0 - t) * values[left - first_block] + t * values[right - first_block]

    def encode(self, feats: np.ndarray) -> list[np.ndarray]:
        """``[n_frames, dim]`` (n_frames a multiple of the coarsest stride) → codes per level."""
        if len(feats) % self.strides[0]:
            raise ValueError(f"{len(feats)} frames is not a multiple of the coarse stride {self.strides[0]}")
        residual = feats.astype(np.float32).copy()
        frames = np.arange(len(feats))
        levels = []
        for stride, codebook in zip(self.strides, self.codebooks, strict=True):
            pooled = residual.reshape(-1, stride, residual.shape[1]).mean(1)
            codes = nearest(pooled, codebook)
            residual -= self.spread(codebook[codes], 0, stride, frames)
            levels.append(codes)
        return levels

    def reconstruct(self, levels: list[np.ndarray], start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` from per-level codes (all received so far, in time order)."""
        frames = np.arange(start, stop)
        out = np.zeros((stop - start, self.dim), dtype=np.float32)
        for stride, codebook, codes in zip(self.strides, self.codebooks, levels, strict=True):
            lo = max(0, start // stride - 1)  # the blocks bracketing [start, stop)
            hi = min(len(codes), (stop - 1) // stride + 2)
            out += self.spread(codebook[codes[lo:hi]], lo, stride, frames)
        return out

    def frames_final(self, n_coarse: int, ended: bool) -> int:
        """Fine frames whose reconstruction no longer changes once ``n_coarse`` coarse frames are known.

        Interpolation needs the next block's centre on every level, which lies in the next coarse frame.
        """
        return self.strides[0] * (n_coarse if ended else max(0, n_coarse - 1))

    @classmethod
    def fit(
        cls,
        utterances: list[np.ndarray],
        strides: tuple[int, ...],
        codebook_size: int,
        iters: int,
        max_vectors: int,
        rng: np.random.Generator,
    ) -> tuple[ResidualQuantizer, list[np.ndarray]]:
        """Fit level by level on per-utterance frame matrices; returns quantizer and reconstructions."""
        residuals = [u.astype(np.float32).copy() for u in utterances]
        recons = [np.zeros_like(u) for u in residuals]
        codebooks = []
        for level, stride in enumerate(strides):
            pooled = np.concatenate([r.reshape(-1, stride, r.shape[1]).mean(1) for r in residuals])
            if len(pooled) > max_vectors:
                pooled = pooled[rng.choice(len(pooled), max_vectors, replace=False)]
            codebook = kmeans(
                pooled, codebook_size, iters, rng, desc=f"codec level {level} (stride {stride})"
            )
            codebooks.append(codebook)
            for r, rec in zip(residuals, recons, strict=True):
                codes = nearest(r.reshape(-1, stride, r.shape[1]).mean(1), codebook)
                part = cls.spread(codebook[codes], 0, stride, np.arange(len(r)))
                r -= part
                rec += part
            log.info(
                "codec level %d: residual rms %.3f",
                level,
                float(np.sqrt(np.mean(np.concatenate(residuals) ** 2))),
            )
        return cls(tuple(strides), codebooks), recons
