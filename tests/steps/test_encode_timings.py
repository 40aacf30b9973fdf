"""encode stores word timings of every spoken answer; the aligned layout packs from them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from deeptalk.data.dataset import SequenceDataset
from deeptalk.data.packing import answer_start, aligned_rows, load_layout, undelay
from deeptalk.data.processed import ProcessedStore
from deeptalk.data.text_tokenizer import load_tokenizer
from deeptalk.steps import pack
from tests.steps.test_encode_pack import project  # noqa: F401  (module fixture: a corpus run through encode)


def test_every_spoken_answer_has_one_start_frame_per_text_token(project):  # noqa: F811
    cfg, _ = project
    store = ProcessedStore(cfg.paths.processed)
    tokenizer = load_tokenizer(cfg.paths.raw / "tokenizer")
    texts = pd.read_parquet(cfg.paths.raw / "utterances.parquet").set_index("id")["text"]
    assert set(store.token_frames) == set(store.targets) == {"ua1", "ua2"}
    for uid in store.targets:
        frames = store.token_frames[uid]
        assert len(frames) == len(tokenizer.encode(texts[uid]))
        assert np.all(np.diff(frames) >= 0) and frames.min() >= 0 and frames.max() < store.n_frames[uid]


def test_aligned_dataset_places_the_answer_text_on_its_frames(project):  # noqa: F811
    cfg, _ = project
    pack.run(cfg)
    heldout = SequenceDataset(cfg, "heldout")
    heldout.layout = dataclasses.replace(load_layout(cfg.paths.sequences), answer_layout="aligned")
    lay = heldout.layout
    ex = heldout[0].packed
    head = answer_start(ex.input_ids, lay)
    body = ex.input_ids[head + 1 :]
    store = ProcessedStore(cfg.paths.processed)
    rows = aligned_rows(store.token_frames["ua2"])
    answer = heldout.tokenized(0).turns[-1].ids
    assert body[rows, lay.text_stream].tolist() == list(answer)
    assert body[rows[-1] + 1, lay.text_stream] == lay.text_special("EOT")
    assert np.array_equal(undelay(body, lay).numpy(), store.codes["ua2"])
