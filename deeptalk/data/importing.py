"""Import a user-supplied corpus (paper profile) from a local directory or ``s3://bucket/prefix`` (s3fs).

The source holds ``utterances.parquet`` and ``samples.parquet`` in the ``schema.py`` layout, with
``audio_path`` relative to the source root. Audio is copied into ``<dest>/audio/<utt_id>.wav`` as 16-bit mono
at ``cfg.sample_rate`` (resampled when needed; duration, RMS and sha256 recomputed for the new file). A file
whose bytes do not match the manifest's sha256 is rejected: an import never hides a corrupt source.
S3 credentials/endpoint come from the usual AWS environment (``AWS_ENDPOINT_URL`` for MinIO/moto).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import fsspec
import pandas as pd
from tqdm import tqdm

from deeptalk.data.audio_io import decode_wav_bytes, resample, rms, sha256_bytes, write_wav
from deeptalk.data.config import DataConfig
from deeptalk.data.corpus import staging_dir, tokenizer_texts, write_parquet
from deeptalk.data.schema import SAMPLE_COLUMNS, UTTERANCE_COLUMNS
from deeptalk.data.text_tokenizer import HFTextTokenizer, TextTokenizer

log = logging.getLogger(__name__)


def read_manifest(fs, root: str, name: str, columns: dict[str, str]) -> pd.DataFrame:
    path = f"{root.rstrip('/')}/{name}"
    if not fs.exists(path):
        raise ValueError(f"import source has no {name} at {path}")
    with fs.open(path, "rb") as f:
        df = pd.read_parquet(io.BytesIO(f.read()))
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; expected {list(columns)}")
    return df[list(columns)].astype(columns)


def import_corpus(source: str, dest: str | Path, cfg: DataConfig) -> dict:
    """Copy manifests + audio from ``source`` into ``dest`` (atomically replaced); returns a summary."""
    fs, root = fsspec.core.url_to_fs(source)
    utterances = read_manifest(fs, root, "utterances.parquet", UTTERANCE_COLUMNS)
    samples = read_manifest(fs, root, "samples.parquet", SAMPLE_COLUMNS)
    rows = []
    with staging_dir(Path(dest)) as tmp:
        for row in tqdm(utterances.to_dict("records"), desc="import audio", unit="utt", disable=None):
            src = f"{root.rstrip('/')}/{row['audio_path']}"
            data = fs.cat_file(src)
            if row["sha256"] and sha256_bytes(data) != row["sha256"]:
                raise ValueError(f"utterance {row['id']}: {src} does not match its manifest sha256")
            wav, sr = decode_wav_bytes(data)
            wav = resample(wav, sr, cfg.sample_rate)
            rel = f"audio/{row['id']}.wav"
            out = write_wav(tmp / rel, wav, cfg.sample_rate)
            rows.append(
                {
                    **row,
                    "audio_path": rel,
                    "sample_rate": cfg.sample_rate,
                    "duration": len(wav) / cfg.sample_rate,
                    "rms": round(rms(wav), 6),
                    "sha256": sha256_bytes(out),
                }
            )
        utterances = pd.DataFrame(rows, columns=list(UTTERANCE_COLUMNS)).astype(UTTERANCE_COLUMNS)
        write_parquet(utterances, tmp / "utterances.parquet")
        write_parquet(samples, tmp / "samples.parquet")
        if cfg.hf_tokenizer:
            tokenizer = HFTextTokenizer.load(cfg.hf_tokenizer)
        else:
            tokenizer = TextTokenizer.build(tokenizer_texts(samples, utterances))
        tokenizer.save(tmp / "tokenizer")
    summary = {
        "source": source,
        "utterances": len(utterances),
        "samples": len(samples),
        "audio_seconds": round(float(utterances["duration"].sum()), 1),
        "vocab_size": tokenizer.vocab_size,
    }
    log.info("imported corpus: %s", summary)
    return summary
