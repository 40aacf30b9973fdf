"""Pipeline step ``fit_codec``: fit the embedded codec on the assistant's voice, or verify a SNAC checkpoint.

Writes ``cfg.paths.codec`` (a codec directory ``load_codec`` reads). The embedded codec is fitted on the
training utterances of every voice the model must *speak* — the speakers of assistant answer audio in
``samples.parquet`` (``cfg.data.assistant_voice`` if there is none) — plus
``cfg.codec.fit_speakers``: codebooks do not transfer to voices outside the fit.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from deeptalk.codec.embedded import EmbeddedCodec
from deeptalk.codec.snac_adapter import SnacCodec
from deeptalk.data.schema import Sample
from deeptalk.runtime import setup_threads

log = logging.getLogger(__name__)


def assistant_speakers(raw: Path) -> set[str]:
    """Speakers of the audio that assistant turns speak (``speak=True``) in the corpus's samples."""
    samples_file, utts_file = raw / "samples.parquet", raw / "utterances.parquet"
    if not samples_file.is_file() or not utts_file.is_file():
        return set()
    samples = pd.read_parquet(samples_file, columns=["turns"])
    spoken = {
        t.audio_id
        for text in samples["turns"]
        for t in Sample.parse_turns(text)
        if t.role == "assistant" and t.speak and t.audio_id
    }
    utts = pd.read_parquet(utts_file, columns=["id", "speaker"])
    return set(utts.loc[utts["id"].isin(spoken), "speaker"])


def fit_utterances(raw: Path, speakers: set[str]) -> pd.DataFrame:
    """Training-split utterances of ``speakers``, in a stable order."""
    utts_file = raw / "utterances.parquet"
    if not utts_file.is_file():
        raise ValueError(f"no corpus manifest {utts_file}: run generate_data first")
    utts = pd.read_parquet(utts_file)
    rows = utts[(utts["split"] == "train") & utts["speaker"].isin(speakers)].sort_values("id")
    if rows.empty:
        raise ValueError(f"no training utterances of the codec voices {sorted(speakers)} in {utts_file}")
    return rows


def _read_audio(raw: Path, rows: pd.DataFrame) -> Iterator[tuple[np.ndarray, int]]:
    for path in rows["audio_path"]:
        wav, sr = sf.read(raw / path, dtype="float32", always_2d=False)
        yield (wav.mean(axis=1) if wav.ndim == 2 else wav), int(sr)


def _checkpoint_path(cfg: Any) -> Path:
    path = Path(cfg.codec.checkpoint)
    return path if path.is_absolute() else Path(cfg.paths.root) / path


def run(cfg: Any) -> dict:
    """Fit (embedded) or verify (snac) the codec and save it to ``cfg.paths.codec``; returns a summary."""
    setup_threads(cfg.threads)
    out = Path(cfg.paths.codec)
    started = time.perf_counter()
    if cfg.codec.kind == "snac":
        codec = SnacCodec.from_checkpoint(_checkpoint_path(cfg), cfg.codec)
        probe = np.sin(np.linspace(0, 400 * np.pi, codec.sample_rate)).astype(np.float32) * 0.5
        codes = codec.encode(probe, codec.sample_rate)
        if codec.decode(codes).shape[0] != codes.shape[1] * codec.samples_per_coarse:
            raise ValueError("SNAC checkpoint decodes to the wrong length")  # pragma: no cover
        summary: dict[str, Any] = {"kind": "snac", "checkpoint": str(_checkpoint_path(cfg))}
    else:
        raw = Path(cfg.paths.raw)
        if not (raw / "utterances.parquet").is_file():
            raise ValueError(f"no corpus manifest {raw / 'utterances.parquet'}: run generate_data first")
        # the voices of spoken answers; the configured assistant voice when the corpus has none
        speakers = (assistant_speakers(raw) or {cfg.data.assistant_voice}) | set(cfg.codec.fit_speakers)
        rows = fit_utterances(raw, speakers)
        codec = EmbeddedCodec.fit(_read_audio(raw, rows), cfg.codec, seed=cfg.seed)
        codec.fit_info["speakers"] = sorted(speakers)
        summary = {"kind": "embedded", "speakers": sorted(speakers), **codec.fit_info}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    codec.save(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a failed fit never leaves a half-written codec behind
    summary.update(
        n_streams=codec.n_streams,
        codebook_size=codec.codebook_size,
        frames_per_second=round(codec.frames_per_second, 4),
        seconds_taken=round(time.perf_counter() - started, 1),
        path=str(out),
    )
    log.info("fit_codec: %s", json.dumps(summary))
    return summary
