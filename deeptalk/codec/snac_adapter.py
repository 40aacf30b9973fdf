"""SNAC (the reference's codec) behind the ``Codec`` protocol, with weights from a local directory only.

A SNAC directory is what SNAC publishes: ``config.json`` (the ``snac.SNAC`` constructor arguments) and
``pytorch_model.bin`` (its state dict). ``SnacCodec.save`` writes the same two files, with our ``kind`` and
codec config added to ``config.json`` so ``load_codec`` can dispatch; a plain SNAC directory loads too.

Levels map to rows as in the reference: ``[c12, c24a, c24b, c48a, c48b, c48c, c48d]``. Decoding is chunked:
columns ``[c0, c1)`` are decoded with ``snac_context_frames`` columns of context either side and cropped, with
SNAC's noise blocks seeded per chunk, so the offline decode is the streaming computation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from deeptalk.codec.base import ConfiguredCodec, check_codes, check_wav, levels_to_rows, rows_to_levels
from deeptalk.codec.config import CodecConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
_OUR_KEYS = ("kind", "codec_config")


def is_snac_dir(path: str | Path) -> bool:
    """True for a directory holding a SNAC checkpoint (``config.json`` with SNAC's keys + weights)."""
    path = Path(path)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "vq_strides" in meta and (path / WEIGHTS_FILE).is_file()


def save_snac_checkpoint(
    model: torch.nn.Module, snac_config: dict, path: str | Path, extra: dict | None = None
) -> None:
    """Write ``model`` as a SNAC directory (``config.json`` + ``pytorch_model.bin``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps({**snac_config, **(extra or {})}, indent=2))


class SnacCodec(ConfiguredCodec):
    """SNAC on ``device`` (``from_checkpoint(..., device=)`` / :meth:`to`): waveforms and codes cross as CPU
    arrays, the network runs where the model is (the 19.8 M-parameter decoder is slow on CPU)."""

    kind = "snac"

    def __init__(self, model: torch.nn.Module, snac_config: dict, config: CodecConfig) -> None:
        self.model = model.eval()
        self.snac_config = dict(snac_config)
        self.config = dataclasses.replace(
            config,
            kind="snac",
            sample_rate=int(model.sampling_rate),
            hop=int(model.hop_length),
            level_strides=tuple(model.vq_strides),
            codebook_size=int(model.codebook_size),
        )
        if model.attn_window_size and self.config.snac_context_frames * self.config.frames_per_coarse < 1:
            raise ValueError("SNAC with local attention needs context frames")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> SnacCodec:
        """Move the network to ``device`` (in place; returned)."""
        self.model.to(device)
        return self

    # ---- the Codec protocol ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, wav: np.ndarray, sr: int) -> torch.Tensor:
        audio = torch.from_numpy(check_wav(wav, sr, self.sample_rate))[None, None].to(self.device)
        levels = [c[0].cpu().numpy() for c in self.model.encode(audio)]
        n_coarse = len(levels[0])
        if n_coarse * self.samples_per_coarse < audio.shape[-1]:
            raise ValueError("SNAC returned fewer frames than the audio needs")  # pragma: no cover
        return torch.from_numpy(levels_to_rows(levels, self.config.level_strides))

    def decode_stream(self) -> SnacStreamingDecoder:
        return SnacStreamingDecoder(self)

    @torch.inference_mode()
    def decode_window(
        self, rows: np.ndarray, start: int, stop: int, emit: tuple[int, int], seed: int
    ) -> np.ndarray:
        """Decode columns ``[start, stop)`` of ``rows`` and return the samples of columns ``emit``."""
        device = self.device
        levels = [
            torch.from_numpy(lv)[None].to(device)
            for lv in rows_to_levels(rows[:, start:stop], self.config.level_strides)
        ]
        # SNAC's noise blocks draw from the generator of the model's device: seeded per chunk on that device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            audio = self.model.decode(levels)[0, 0].float().cpu().numpy()
        spc = self.samples_per_coarse
        return audio[(emit[0] - start) * spc : (emit[1] - start) * spc].astype(np.float32)

    # ---- persistence ------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, config: CodecConfig | None = None,
                        device: str | torch.device = "cpu") -> SnacCodec:
        """Build ``snac.SNAC`` from a local SNAC directory on ``device`` and check its geometry against ``config``."""
        from snac import SNAC

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ValueError(f"SNAC checkpoint {path} needs {CONFIG_FILE} and {WEIGHTS_FILE}")
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
        except ValueError as err:
            raise ValueError(f"SNAC config {path / CONFIG_FILE} is not valid JSON: {err}") from err
        snac_config = {k: v for k, v in meta.items() if k not in _OUR_KEYS}
        if config is None:
            saved = meta.get("codec_config")
            from deeptalk.codec.embedded import config_from_json

            config = config_from_json(saved) if saved else CodecConfig(kind="snac", checkpoint=str(path))
        try:
            model = SNAC(**snac_config)
        except TypeError as err:
            raise ValueError(
                f"SNAC config {path / CONFIG_FILE} has arguments snac.SNAC does not take: {err}"
            ) from err
        try:
            state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as err:
            raise ValueError(
                f"SNAC weights {path / WEIGHTS_FILE} do not load into the configured model: {err}"
            ) from err
        codec = cls(model.to(device), snac_config, config)
        want = (config.sample_rate, config.hop, config.level_strides, config.codebook_size)
        got = (codec.sample_rate, codec.config.hop, codec.config.level_strides, codec.codebook_size)
        if want != got:
            raise ValueError(f"SNAC checkpoint geometry (sr, hop, strides, codebook) {got} != config {want}")
        log.info(
            "SNAC codec from %s: %d streams at %.2f frames/s", path, codec.n_streams, codec.frames_per_second
        )
        return codec

    @classmethod
    def load(cls, path: str | Path, meta: dict | None = None, device: str | torch.device = "cpu") -> SnacCodec:
        return cls.from_checkpoint(path, device=device)

    def save(self, path: str | Path) -> None:
        codec_config = {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()
        }
        save_snac_checkpoint(
            self.model, self.snac_config, path, {"kind": self.kind, "codec_config": codec_config}
        )


class SnacStreamingDecoder:
    """Decodes ``snac_chunk_frames`` columns at a time once ``snac_context_frames`` more have arrived."""

    def __init__(self, codec: SnacCodec) -> None:
        self.codec = codec
        self.reset()

    def reset(self) -> None:
        self.rows = np.zeros((self.codec.n_streams, 0), np.int64)
        self.next_chunk = 0

    def push(self, codes: torch.Tensor) -> np.ndarray:
        rows = check_codes(codes, self.codec.n_streams, self.codec.codebook_size)
        self.rows = np.concatenate([self.rows, rows], axis=1)
        return self._advance(ended=False)

    def flush(self) -> np.ndarray:
        audio = self._advance(ended=True)
        self.reset()
        return audio

    def _advance(self, ended: bool) -> np.ndarray:
        cfg = self.codec.config
        n, chunk, ctx = self.rows.shape[1], cfg.snac_chunk_frames, cfg.snac_context_frames
        out = []
        while True:
            c0 = self.next_chunk * chunk
            c1 = c0 + chunk
            if c0 >= n or (not ended and c1 + ctx > n):
                break
            c1 = min(c1, n)
            out.append(
                self.codec.decode_window(
                    self.rows, max(0, c0 - ctx), min(n, c1 + ctx), (c0, c1), seed=self.next_chunk
                )
            )
            self.next_chunk += 1
        return np.concatenate(out) if out else np.zeros(0, np.float32)
