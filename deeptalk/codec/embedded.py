"""The embedded codec: log-mel frames → multi-scale residual k-means codes → learned spectrum → Griffin-Lim.

Fitted on the corpus in the pipeline (no pretrained weights exist offline). Geometry is SNAC 24 kHz's, so the
model side is the same for both codec kinds: 7 codes per 85.3 ms column.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from deeptalk.codec.base import ConfiguredCodec, check_codes, check_wav, levels_to_rows, rows_to_levels
from deeptalk.codec.config import CodecConfig
from deeptalk.codec.quantizer import ResidualQuantizer
from deeptalk.codec.spectral import log_spectra, mel_filterbank
from deeptalk.codec.vocoder import SpectrumDecoder, StreamingGriffinLim, context_windows

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "codec.safetensors"


class EmbeddedCodec(ConfiguredCodec):
    kind = "embedded"

    def __init__(
        self,
        config: CodecConfig,
        quantizer: ResidualQuantizer,
        decoder: SpectrumDecoder,
        fit_info: dict | None = None,
    ) -> None:
        if config.kind != "embedded":
            raise ValueError(f"EmbeddedCodec needs an 'embedded' config, got kind {config.kind!r}")
        self.config = config
        self.quantizer = quantizer
        self.decoder = decoder
        self.fit_info = dict(fit_info or {})
        self.mel_fb = mel_filterbank(
            config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
        )
        self._check_shapes()

    # ---- the Codec protocol ---------------------------------------------------------------------------
    def features(self, wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """(log-mel, log-magnitude) frames of a waveform padded to whole coarse frames."""
        return analyse(wav, sr, self.config, self.mel_fb)

    def encode(self, wav: np.ndarray, sr: int) -> torch.Tensor:
        """``[K=7, T]`` codes, ``T = ceil(len / samples_per_coarse)`` at the codec's sample rate."""
        log_mel, _ = self.features(wav, sr)
        levels = self.quantizer.encode(log_mel)
        return torch.from_numpy(levels_to_rows(levels, self.config.level_strides))

    def decode_stream(self) -> EmbeddedStreamingDecoder:
        return EmbeddedStreamingDecoder(self)

    # ---- fitting ----------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, audio: Iterable[tuple[np.ndarray, int]], config: CodecConfig, seed: int = 0
    ) -> EmbeddedCodec:
        """Fit codebooks and spectrum decoder on ``(wav, sample_rate)`` pairs (the voices to be spoken)."""
        rng = np.random.default_rng(seed)
        mel_fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
        mels, mags, seconds = [], [], 0.0
        for wav, sr in audio:
            log_mel, log_mag = analyse(wav, sr, config, mel_fb)
            mels.append(log_mel)
            mags.append(log_mag)
            seconds += len(log_mel) * config.hop / config.sample_rate
            if seconds >= config.fit_max_seconds:
                break
        if not mels:
            raise ValueError("codec fit got no audio")
        n_frames = sum(len(m) for m in mels)
        log.info("fitting embedded codec on %d utterances, %.1f s, %d frames", len(mels), seconds, n_frames)
        quantizer, recons = ResidualQuantizer.fit(
            mels,
            config.level_strides,
            config.codebook_size,
            config.kmeans_iters,
            config.kmeans_max_frames,
            rng,
        )
        decoder = SpectrumDecoder.fit(
            recons,
            mags,
            config.decoder_context,
            config.decoder_ridge,
            config.log_floor,
            max_frames=4 * config.kmeans_max_frames,
            rng=rng,
        )
        info = {"utterances": len(mels), "seconds": round(seconds, 2), "frames": n_frames, "seed": seed}
        return cls(config, quantizer, decoder, info)

    # ---- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"codebook_{i}": cb for i, cb in enumerate(self.quantizer.codebooks)}
        tensors["decoder_weight"] = self.decoder.weight
        save_file(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
            str(path / WEIGHTS_FILE),
        )
        meta = {"kind": self.kind, "config": _jsonable(self.config), "fit": self.fit_info}
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path, meta: dict) -> EmbeddedCodec:
        path = Path(path)
        config = config_from_json(meta.get("config", {}))
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise ValueError(f"codec directory {path} has no {WEIGHTS_FILE}")
        try:
            tensors = load_file(str(weights))
        except Exception as err:  # safetensors raises its own error types for truncated/garbled files
            raise ValueError(f"codec weights {weights} are unreadable: {err}") from err
        n_levels = len(config.level_strides)
        missing = [
            k for k in [f"codebook_{i}" for i in range(n_levels)] + ["decoder_weight"] if k not in tensors
        ]
        if missing:
            raise ValueError(f"codec weights {weights} lack tensors {missing}")
        quantizer = ResidualQuantizer(
            config.level_strides, [tensors[f"codebook_{i}"] for i in range(n_levels)]
        )
        decoder = SpectrumDecoder(tensors["decoder_weight"], config.decoder_context, config.log_floor)
        return cls(config, quantizer, decoder, meta.get("fit"))

    def _check_shapes(self) -> None:
        cfg = self.config
        for i, cb in enumerate(self.quantizer.codebooks):
            if cb.shape != (cfg.codebook_size, cfg.n_mels):
                raise ValueError(
                    f"codebook {i} has shape {cb.shape}, config wants {(cfg.codebook_size, cfg.n_mels)}"
                )
        want = ((2 * cfg.decoder_context + 1) * cfg.n_mels + 1, cfg.n_fft // 2 + 1)
        if self.decoder.weight.shape != want:
            raise ValueError(f"decoder weight has shape {self.decoder.weight.shape}, config wants {want}")


class EmbeddedStreamingDecoder:
    """Incremental decode: codes → final mel frames → final spectra → chunked Griffin-Lim → audio.

    Look-ahead: a fine frame is final once the next coarse column has arrived (interpolated levels), its
    spectrum ``decoder_context`` frames later, and its audio ``lookahead_frames`` after that.
    """

    def __init__(self, codec: EmbeddedCodec) -> None:
        self.codec = codec
        cfg = codec.config
        self.gl = StreamingGriffinLim(
            cfg.n_fft,
            cfg.hop,
            cfg.chunk_frames,
            cfg.left_context_frames,
            cfg.lookahead_frames,
            cfg.griffin_lim_iters,
            cfg.griffin_lim_momentum,
            cfg.phase_init,
        )
        self.reset()

    def reset(self) -> None:
        n_levels = len(self.codec.config.level_strides)
        self.levels: list[list[np.ndarray]] = [[] for _ in range(n_levels)]
        self.n_coarse = 0
        self.mel = np.zeros((0, self.codec.config.n_mels), np.float32)
        self.n_spec = 0
        self.gl.reset()

    def push(self, codes: torch.Tensor) -> np.ndarray:
        cfg = self.codec.config
        rows = check_codes(codes, cfg.n_streams, cfg.codebook_size)
        for buf, part in zip(self.levels, rows_to_levels(rows, cfg.level_strides), strict=True):
            buf.append(part)
        self.n_coarse += rows.shape[1]
        return self._advance(ended=False)

    def flush(self) -> np.ndarray:
        audio = self._advance(ended=True)
        self.reset()
        return audio

    def _advance(self, ended: bool) -> np.ndarray:
        cfg = self.codec.config
        levels = [np.concatenate(buf) if buf else np.zeros(0, np.int64) for buf in self.levels]
        self.levels = [[lv] for lv in levels]
        n_mel = self.codec.quantizer.frames_final(self.n_coarse, ended)
        if n_mel > len(self.mel):
            new = self.codec.quantizer.reconstruct(levels, len(self.mel), n_mel)
            self.mel = np.concatenate([self.mel, new])
        n_spec = n_mel if ended else max(0, n_mel - cfg.decoder_context)
        spec = np.zeros((0, cfg.n_fft // 2 + 1), np.float32)
        if n_spec > self.n_spec:
            windows = context_windows(self.mel, cfg.decoder_context, self.n_spec, n_spec - self.n_spec, ended)
            spec = self.codec.decoder(windows)
            self.n_spec = n_spec
        return np.clip(self.gl.push(spec, ended), -1.0, 1.0)


def analyse(wav: np.ndarray, sr: int, cfg: CodecConfig, mel_fb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak-normalise (voices differ in gain), pad to whole coarse frames; (log-mel, log-magnitude)."""
    wav = check_wav(wav, sr, cfg.sample_rate)
    peak = float(np.abs(wav).max())
    if peak > 0:
        wav = wav * (cfg.peak_level / peak)
    n_coarse = -(-len(wav) // cfg.samples_per_coarse)
    return log_spectra(wav, cfg.n_fft, cfg.hop, n_coarse * cfg.frames_per_coarse, mel_fb, cfg.log_floor)


def _jsonable(config: CodecConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_from_json(data: dict) -> CodecConfig:
    """Rebuild a ``CodecConfig`` from its saved dict, rejecting unknown keys (a newer or foreign file)."""
    names = {f.name for f in dataclasses.fields(CodecConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"codec config has unknown key(s) {unknown}")
    return CodecConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
