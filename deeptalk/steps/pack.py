"""Step ``pack``: tokenised conversations per split and task, ready for :class:`SequenceDataset`.

Reads ``data/raw`` (samples, utterances, tokenizer) and ``data/processed``; writes ``data/sequences``:
``layout.json`` (the pipeline's :class:`TokenLayout`: every later step reads it), ``<split>/<task>.parquet``
(``SEQUENCE_COLUMNS``) and ``summary.json``. Each sample is packed once in evaluation mode here, to check
that everything it refers to exists and to record its length; training re-packs per epoch from the stored
tokens. Rows are sorted and serialised deterministically (byte-identical reruns).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from deeptalk.data.dataset import draw_rng, write_sequences
from deeptalk.data.packing import layout_for, pack_tokenized, save_layout, tokenize_sample
from deeptalk.data.processed import ProcessedStore
from deeptalk.data.schema import Sample
from deeptalk.data.text_tokenizer import load_tokenizer
from deeptalk.model.backbone import checkpoint_vocab_rows, resolve_checkpoint
from deeptalk.tokens import IGNORE_INDEX

log = logging.getLogger(__name__)


def run(cfg) -> dict:
    raw, out = Path(cfg.paths.raw), Path(cfg.paths.sequences)
    samples = pd.read_parquet(raw / "samples.parquet").sort_values("id")
    utterances = pd.read_parquet(raw / "utterances.parquet")
    tokenizer = load_tokenizer(raw / "tokenizer")
    store = ProcessedStore(cfg.paths.processed)
    if store.meta.frames_per_position != cfg.audio_input.projector_stride or (
        store.meta.encoder_dim != cfg.audio_input.encoder_dim
    ):
        raise ValueError(f"{cfg.paths.processed} was encoded for another audio_input config; rerun encode")

    speaker = dict(zip(utterances["id"], utterances["speaker"], strict=False))
    voice_by_utt = {u: speaker[u] for u in sorted(store.targets)}
    packing = cfg.packing
    text_rows = None
    if cfg.model.checkpoint is not None:  # an imported LLM: the text block is its embedding rows
        text_rows = checkpoint_vocab_rows(resolve_checkpoint(cfg.model.checkpoint, cfg.paths.root))
    layout = layout_for(
        tokenizer, store.meta, voices=sorted(set(voice_by_utt.values())), answer_layout=packing.answer_layout,
        text_rows=text_rows, chat=tokenizer.chat_markers() if packing.prompt_format == "chat_template" else None,
    )
    unk = tokenizer.unk_id

    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    summary: dict = {"layout": layout.to_dict(), "max_length": packing.max_length, "splits": {}}
    all_lengths: list[int] = []
    for (split, task), group in tqdm(samples.groupby(["split", "task"], sort=True), desc="pack", unit="set"):
        rows, unknown_tokens, labelled = [], 0, 0
        for rec in group.itertuples(index=False):
            sample = Sample(rec.id, rec.task, rec.split, Sample.parse_turns(rec.turns), rec.fact_id)
            tokenized = tokenize_sample(sample, tokenizer, voice_by_utt)
            packed = pack_tokenized(
                tokenized,
                layout,
                store.codes,
                store.n_positions,
                draw_rng(cfg.seed, 0, sample.id),
                train=False,
                config=packing,
                token_frames_by_utt=store.token_frames,
            )
            unknown_tokens += sum(t.ids.count(unk) for t in tokenized.turns)
            labelled += int((packed.labels != IGNORE_INDEX).sum())
            rows.append(
                dict(
                    id=sample.id,
                    task=task,
                    split=split,
                    fact_id=sample.fact_id,
                    turns=tokenized.turns_json(),
                    length=len(packed),
                    n_audio=len(packed.audio),
                    spoken_target=any(t.role == "assistant" and t.speak for t in tokenized.turns),
                )
            )
        table = pd.DataFrame(rows)
        write_sequences(staging, split, task, table)
        lengths = table["length"].to_numpy()
        all_lengths.extend(lengths.tolist())
        summary["splits"].setdefault(split, {})[task] = {
            "samples": len(table),
            "mean_length": round(float(lengths.mean()), 1),
            "max_length": int(lengths.max()),
            "at_max_length": int((lengths >= packing.max_length).sum()),
            "labelled_ids": labelled,
            "unknown_tokens": unknown_tokens,
        }
        if unknown_tokens:
            log.warning("%s/%s: %d unknown text tokens", split, task, unknown_tokens)
    save_layout(layout, staging)
    (staging / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    log.info(
        "packed %d samples into %s (vocab %d, %d streams)",
        len(all_lengths),
        out,
        layout.vocab_size,
        layout.n_streams,
    )
    return {
        "samples": len(all_lengths),
        "vocab_size": layout.vocab_size,
        "mean_length": round(float(np.mean(all_lengths)), 1),
        "max_length": int(np.max(all_lengths)),
    }
