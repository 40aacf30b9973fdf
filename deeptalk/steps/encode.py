"""Step ``encode``: codec codes for every spoken answer, log-mel features for every user utterance.

Reads ``data/raw`` (manifests + wavs) and ``models/codec``; writes ``data/processed`` (see
:mod:`deeptalk.data.processed`). Utterances are processed in id order and written with deterministic
serialisers, so the same inputs give byte-identical outputs (``dvc repro`` twice reproduces nothing).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from deeptalk.codec.base import check_codes
from deeptalk.codec.registry import load_codec
from deeptalk.data.audio_io import read_wav
from deeptalk.data.features import LogMelExtractor, trim
from deeptalk.data.processed import INDEX_COLUMNS, ProcessedMeta, write_processed
from deeptalk.data.schema import Sample
from deeptalk.data.validation import validate_codes

log = logging.getLogger(__name__)


def utterance_roles(turns_json: Iterable[str]) -> tuple[set[str], set[str]]:
    """``(inputs, targets)``: utterances some user turn may hear, utterances some assistant turn speaks."""
    inputs, targets = set(), set()
    for text in turns_json:
        for turn in Sample.parse_turns(text):
            if turn.audio_id is None:
                continue
            if turn.role == "user":
                inputs.add(turn.audio_id)  # even with speak=False: RQA turns draw speech per epoch
            elif turn.role == "assistant" and turn.speak:
                targets.add(turn.audio_id)
    return inputs, targets


def run(cfg) -> dict:
    raw, out = Path(cfg.paths.raw), Path(cfg.paths.processed)
    utterances = pd.read_parquet(raw / "utterances.parquet").set_index("id")
    samples = pd.read_parquet(raw / "samples.parquet")
    inputs, targets = utterance_roles(samples["turns"])
    missing = sorted((inputs | targets) - set(utterances.index))
    if missing:
        raise ValueError(
            f"{len(missing)} utterances referenced by samples are not in the manifest, e.g. {missing[:5]}"
        )

    codec = load_codec(cfg.paths.codec)
    extractor = LogMelExtractor(cfg.audio_input)
    rows, codes, mels = [], {}, {}
    input_seconds = 0.0
    for utt_id in tqdm(sorted(inputs | targets), desc="encode", unit="utt"):
        meta = utterances.loc[utt_id]
        wav, sr = read_wav(raw / meta["audio_path"])
        row = dict(
            utt_id=utt_id,
            split=meta["split"],
            speaker=meta["speaker"],
            is_input=utt_id in inputs,
            is_target=utt_id in targets,
            n_samples=0,
            n_positions=0,
            mel_kept=0,
            mel_fill=0.0,
            n_frames=0,
        )
        if row["is_input"]:
            try:
                features = extractor(wav, sr)
            except ValueError as err:
                raise ValueError(f"utterance {utt_id} ({meta['audio_path']}): {err}") from err
            mels[utt_id], row["mel_fill"] = trim(features.mel)
            row.update(
                n_samples=features.n_samples, n_positions=features.n_positions, mel_kept=mels[utt_id].shape[1]
            )
            input_seconds += features.n_samples / cfg.audio_input.sample_rate
        if row["is_target"]:
            try:
                codes[utt_id] = check_codes(codec.encode(wav, sr), codec.n_streams, codec.codebook_size)
            except ValueError as err:
                raise ValueError(f"utterance {utt_id} ({meta['audio_path']}): {err}") from err
            row["n_frames"] = codes[utt_id].shape[1]
        rows.append(row)

    if (
        codes
    ):  # the Great Expectations suite on codes (range, stream count, non-empty) before anything is written
        validate_codes(codes, codebook_size=int(codec.codebook_size), n_streams=int(codec.n_streams))
    meta = ProcessedMeta(
        n_mels=cfg.audio_input.n_mels,
        mel_frames=cfg.audio_input.mel_frames,
        n_streams=int(codec.n_streams),
        codebook_size=int(codec.codebook_size),
        frames_per_second=float(codec.frames_per_second),
    )
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    write_processed(staging, index, codes, mels, meta)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)

    frames = sum(c.shape[1] for c in codes.values())
    summary = {
        "inputs": len(inputs),
        "targets": len(targets),
        "input_seconds": round(input_seconds, 2),
        "target_frames": int(frames),
        "target_seconds": round(frames / meta.frames_per_second, 2),
        "bytes": sum(p.stat().st_size for p in out.iterdir()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("encoded %d input and %d target utterances into %s", len(inputs), len(targets), out)
    return summary
