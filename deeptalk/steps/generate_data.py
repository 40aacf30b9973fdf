"""Step ``generate_data``: synthesize the offline corpus (tiny/small) or import user manifests (paper).

Writes ``cfg.paths.raw``: ``utterances.parquet``, ``samples.parquet``, ``audio/``, ``tokenizer/`` (and
``facts.parquet`` when generated). The corpus seed is ``cfg.data.seed``.
"""

from __future__ import annotations

import logging

from deeptalk.data.corpus import build_corpus
from deeptalk.data.importing import import_corpus

log = logging.getLogger(__name__)


def run(cfg) -> dict:
    if cfg.data.import_source:
        log.info("importing corpus from %s", cfg.data.import_source)
        return import_corpus(cfg.data.import_source, cfg.paths.raw, cfg.data)
    return build_corpus(cfg.data, cfg.paths.raw)
