"""Step ``generate_data``: synthesize the offline corpus (tiny/small) or import user manifests (paper).

Writes ``cfg.paths.raw``: ``utterances.parquet``, ``samples.parquet``, ``audio/``, ``tokenizer/`` (and
``facts.parquet`` when generated). The corpus seed is ``cfg.data.seed``; ``cfg.data.import_source`` set means
import instead of generate.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from deeptalk.data.corpus import build_corpus
from deeptalk.data.importing import import_corpus

log = logging.getLogger(__name__)


def run(cfg) -> dict:
    data = cfg.data
    if data.max_utterance_seconds > cfg.audio_input.max_seconds:
        raise ValueError(
            f"data.max_utterance_seconds={data.max_utterance_seconds} exceeds the audio encoder's "
            f"audio_input.max_seconds={cfg.audio_input.max_seconds}"
        )
    if data.hf_tokenizer and not Path(data.hf_tokenizer).is_absolute():
        data = dataclasses.replace(data, hf_tokenizer=str(cfg.paths.root / data.hf_tokenizer))
    if data.import_source:
        log.info("importing corpus from %s", data.import_source)
        return import_corpus(data.import_source, cfg.paths.raw, data)
    return build_corpus(data, cfg.paths.raw)
