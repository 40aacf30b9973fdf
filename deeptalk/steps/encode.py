"""Step ``encode``: codec codes for every spoken answer, frozen-encoder frames for every user utterance.

The speech encoder (``models/encoder``, converted by ``prepare_encoder``) never trains, so its outputs are
computed here once and training reads them from disk.

Spoken answers also get the start time of each of their text tokens (forced alignment with the offline
Whisper, :mod:`deeptalk.data.alignment`), which the aligned answer layout places on the codec frames.

Reads ``data/raw`` (manifests + wavs + tokenizer) and ``models/codec``; writes ``data/processed`` (see
:mod:`deeptalk.data.processed`). Utterances are processed in id order and written with deterministic
serialisers, so the same inputs give byte-identical outputs (``dvc repro`` twice reproduces nothing).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from deeptalk.codec.base import check_codes
from deeptalk.codec.registry import load_codec
from deeptalk.data.alignment import WordAligner
from deeptalk.data.audio_io import read_wav
from deeptalk.data.features import SpeechFeatureExtractor
from deeptalk.data.processed import INDEX_COLUMNS, ProcessedMeta, write_processed
from deeptalk.data.schema import Sample
from deeptalk.data.text_tokenizer import load_tokenizer
from deeptalk.data.validation import validate_codes
from deeptalk.model.audio_encoder import encode_trimmed, frozen_encoder
from deeptalk.model.backbone import torch_dtype
from deeptalk.runtime import resolve_device

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

    tokenizer = load_tokenizer(raw / "tokenizer")  # word timings are per text token, as packing tokenises
    device = resolve_device(cfg.device)  # every model here runs there; arrays come back to the CPU
    aligner = WordAligner(device=device.type) if targets else None
    codec = load_codec(cfg.paths.codec, device=device)
    encoder = frozen_encoder(cfg.audio_input, torch_dtype(cfg.model.dtype), device)  # the served encoder's dtype
    extractor = SpeechFeatureExtractor(cfg.audio_input, lambda mel: encode_trimmed(encoder, mel))
    rows, codes, frames = [], {}, {}
    timings: dict[str, np.ndarray] = {}  # spoken answers: start (s) of each text token (aligned layout)
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
            n_frames=0,
        )
        if row["is_input"]:
            try:
                features = extractor(wav, sr)
            except ValueError as err:
                raise ValueError(f"utterance {utt_id} ({meta['audio_path']}): {err}") from err
            frames[utt_id] = features.frames
            row.update(n_samples=features.n_samples, n_positions=features.n_positions)
            input_seconds += features.n_samples / cfg.audio_input.sample_rate
        if row["is_target"]:
            try:
                codes[utt_id] = check_codes(codec.encode(wav, sr), codec.n_streams, codec.codebook_size)
            except ValueError as err:
                raise ValueError(f"utterance {utt_id} ({meta['audio_path']}): {err}") from err
            row["n_frames"] = codes[utt_id].shape[1]
            try:
                timings[utt_id] = aligner.token_starts(wav, sr, str(meta["text"]), tokenizer)
            except ValueError as err:
                raise ValueError(f"utterance {utt_id} ({meta['audio_path']}): word timings: {err}") from err
        rows.append(row)

    if (
        codes
    ):  # the Great Expectations suite on codes (range, stream count, non-empty) before anything is written
        validate_codes(codes, codebook_size=int(codec.codebook_size), n_streams=int(codec.n_streams))
    meta = ProcessedMeta(
        encoder_dim=int(encoder.config.d_model),
        frames_per_position=cfg.audio_input.projector_stride,
        n_streams=int(codec.n_streams),
        codebook_size=int(codec.codebook_size),
        frames_per_second=float(codec.frames_per_second),
    )
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    write_processed(staging, index, codes, frames, meta, timings=timings)
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
