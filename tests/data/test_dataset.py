"""SequenceDataset over written processed/sequence files, per-epoch deterministic draws, collate, sampler."""

from __future__ import annotations

import pickle
import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deeptalk.audio_input import AudioInputConfig
from deeptalk.data.dataset import (
    EpochSampler,
    Example,
    SequenceDataset,
    collate,
    write_sequences,
)
from deeptalk.data.features import SpeechFeatureExtractor
from deeptalk.data.config import PackingConfig
from deeptalk.data.packing import (
    answer_start,
    pack_tokenized,
    save_layout,
    tokenize_sample,
    undelay,
)
from deeptalk.data.processed import ProcessedMeta, ProcessedStore, write_processed
from deeptalk.data.schema import Sample, Turn
from deeptalk.tokens import IGNORE_INDEX, TokenLayout

WORDS = "what is the capital of france paris hello world".split()
AUDIO_CFG = AudioInputConfig(max_seconds=2.0)
ENCODER_DIM = 6


def fake_encoder(mel: torch.Tensor) -> torch.Tensor:
    """A stand-in for the frozen Whisper encoder: [n_mels, F] → [F / 2, ENCODER_DIM] (pairs of frames, averaged)."""
    pooled = mel.T.reshape(-1, 2, mel.shape[0]).mean(1)
    return pooled[:, :ENCODER_DIM]


class WordTokenizer:
    vocab_size = len(WORDS)

    def encode(self, text: str) -> list[int]:
        return [WORDS.index(w) for w in text.split()]


LAYOUT = TokenLayout(text_vocab_size=len(WORDS), n_audio_streams=3, codebook_size=16, voices=("joe",))


def tone(seconds: float, freq: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


SAMPLES = {
    ("train", "aqa"): [
        Sample(
            "aqa-1",
            "aqa",
            "train",
            (
                Turn("user", "what is the capital of france", "q0", True),
                Turn("assistant", "paris", "a0", True),
                Turn("user", "hello", "q1", True),
                Turn("assistant", "world", "a1", True),
            ),
        ),
        Sample(
            "aqa-2",
            "aqa",
            "train",
            (Turn("user", "hello", "q1", True), Turn("assistant", "paris", "a1", True)),
        ),
    ],
    ("train", "rqa"): [
        Sample(
            "rqa-1", "rqa", "train", (Turn("user", "what is the capital", "q0"), Turn("assistant", "paris"))
        ),
    ],
    ("validation", "aqa"): [
        Sample(
            "val-1",
            "aqa",
            "validation",
            (
                Turn("user", "hello", "q0", True),
                Turn("assistant", "paris", "a0", True),
                Turn("user", "world", "q1", True),
                Turn("assistant", "hello", "a1", True),
            ),
        ),
    ],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    cfg = SimpleNamespace(
        paths=SimpleNamespace(processed=root / "processed", sequences=root / "sequences"),
        seed=3,
        profile="tiny",
        packing=PackingConfig.for_profile("tiny"),
    )
    extractor = SpeechFeatureExtractor(AUDIO_CFG, fake_encoder)
    gen = np.random.default_rng(0)
    feats = {"q0": extractor(tone(0.9, 300), 16000), "q1": extractor(tone(0.5, 500), 16000)}
    codes = {"a0": gen.integers(0, 16, (3, 5)), "a1": gen.integers(0, 16, (3, 7))}
    frames, rows = {}, []
    for utt, f in feats.items():
        frames[utt] = f.frames
        rows.append(
            dict(
                utt_id=utt,
                split="train",
                speaker="espeak",
                is_input=True,
                is_target=False,
                n_samples=f.n_samples,
                n_positions=f.n_positions,
                n_frames=0,
            )
        )
    for utt, c in codes.items():
        rows.append(
            dict(
                utt_id=utt,
                split="train",
                speaker="piper:joe",
                is_input=False,
                is_target=True,
                n_samples=0,
                n_positions=0,
                n_frames=c.shape[1],
            )
        )
    meta = ProcessedMeta(
        encoder_dim=ENCODER_DIM, frames_per_position=AUDIO_CFG.projector_stride, n_streams=3, codebook_size=16,
        frames_per_second=11.7,
    )
    write_processed(cfg.paths.processed, pd.DataFrame(rows), codes, frames, meta)
    save_layout(LAYOUT, cfg.paths.sequences)
    tok = WordTokenizer()
    store = ProcessedStore(cfg.paths.processed)
    for (split, task), samples in SAMPLES.items():
        table = []
        for s in samples:
            ts = tokenize_sample(s, tok, {"a0": "joe", "a1": "joe"})
            packed = pack_tokenized(ts, LAYOUT, store.codes, store.n_positions, random.Random(0), train=False)
            table.append(
                dict(
                    id=s.id,
                    task=task,
                    split=split,
                    fact_id="",
                    turns=ts.turns_json(),
                    length=len(packed),
                    n_audio=len(packed.audio),
                    spoken_target=True,
                )
            )
        write_sequences(cfg.paths.sequences, split, task, pd.DataFrame(table))
    return SimpleNamespace(cfg=cfg, feats=feats, codes=codes)


def test_dataset_reads_tasks_of_a_split(project):
    ds = SequenceDataset(project.cfg, "train")
    assert ds.tasks == ("aqa", "rqa") and len(ds) == 3 and ds.train
    assert len(SequenceDataset(project.cfg, "train", tasks=["rqa"])) == 1
    assert not SequenceDataset(project.cfg, "validation").train
    with pytest.raises(ValueError, match="no packed heldout"):
        SequenceDataset(project.cfg, "heldout", tasks=["aqa"])
    with pytest.raises(ValueError, match="unknown task"):
        SequenceDataset(project.cfg, "train", tasks=["chat"])
    with pytest.raises(ValueError, match="unknown split"):
        SequenceDataset(project.cfg, "test")


def test_items_carry_codes_and_exact_frames(project):
    ds = SequenceDataset(project.cfg, "train", tasks=["aqa"], train=False)
    ex = ds[1]  # aqa-2: one spoken question, one spoken answer
    assert [a.utt_id for a in ex.packed.audio] == ["q1"]
    assert ex.packed.audio[0].n_positions == project.feats["q1"].n_positions
    assert ex.frames[0].shape == (AUDIO_CFG.projector_stride * project.feats["q1"].n_positions, ENCODER_DIM)
    np.testing.assert_allclose(ex.frames[0], project.feats["q1"].frames, atol=2e-3)  # stored as float16
    p0 = answer_start(ex.packed.input_ids, LAYOUT)
    assert ex.packed.input_ids[p0, 0] == LAYOUT.audio_special("VOICE:joe", 0)
    assert torch.equal(undelay(ex.packed.input_ids[p0 + 1 :], LAYOUT), torch.as_tensor(project.codes["a1"]))


def test_draws_depend_only_on_seed_epoch_and_sample(project):
    a, b = SequenceDataset(project.cfg, "train"), SequenceDataset(project.cfg, "train", tasks=["aqa"])
    for epoch in range(3):
        assert np.array_equal(a[(epoch, 0)].packed.input_ids, b[(epoch, 0)].packed.input_ids)
    a.set_epoch(2)
    assert np.array_equal(a[0].packed.input_ids, b[(2, 0)].packed.input_ids)
    # the two-turn conversation ends at either spoken answer depending on the epoch
    ends = {len(a[(epoch, 0)].packed.audio) for epoch in range(20)}
    assert ends == {1, 2}
    # the rqa user turn is spoken in some epochs and typed in others
    spoken = [bool(a[(epoch, 2)].packed.audio) for epoch in range(40)]
    assert 0 < sum(spoken) < 40
    other_seed = SequenceDataset(SimpleNamespace(**{**vars(project.cfg), "seed": 4}), "train")
    assert any(len(other_seed[(e, 0)].packed) != len(a[(e, 0)].packed) for e in range(20))


def test_eval_items_ignore_the_epoch(project):
    ds = SequenceDataset(project.cfg, "validation")
    first = ds[0].packed.input_ids
    ds.set_epoch(5)
    assert np.array_equal(ds[0].packed.input_ids, first)
    assert len(ds[0].packed.audio) == 2  # the last spoken turn is the target


def test_collate_pads_right_and_places_audio(project):
    ds = SequenceDataset(project.cfg, "train", train=False)
    examples = [ds[i] for i in range(len(ds))]
    batch = ds.collate(examples)
    lengths = [len(e.packed) for e in examples]
    b, t, s = batch.input_ids.shape
    assert (b, t, s) == (3, max(lengths), 4)
    assert batch.attention_mask.sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert (batch.input_ids[i, n:, 3] == LAYOUT.text_special("PAD_T")).all()
        assert (batch.input_ids[i, n:, 1] == LAYOUT.audio_special("PAD_A", 1)).all()
        assert (batch.labels[i, n:] == IGNORE_INDEX).all()
        assert torch.equal(batch.input_ids[i, :n], torch.from_numpy(examples[i].packed.input_ids))
    seg = batch.audio
    n_seg = sum(len(e.packed.audio) for e in examples)
    longest = AUDIO_CFG.projector_stride * max(int(n) for n in seg.n_positions)
    assert seg.frames.shape == (n_seg, longest, ENCODER_DIM) and seg.frames.dtype == torch.float32
    for n in range(n_seg):
        row, start, npos = int(seg.batch_index[n]), int(seg.start[n]), int(seg.n_positions[n])
        ph = batch.input_ids[row, start : start + npos, 3]
        assert (ph == LAYOUT.text_special("AUDIO_PH")).all()
        assert batch.input_ids[row, start - 1, 0] == LAYOUT.audio_special("BOA", 0)


def test_collate_without_audio_and_bad_input(project):
    ds = SequenceDataset(project.cfg, "train", tasks=["rqa"])
    typed = next(ds[(e, 0)] for e in range(50) if not ds[(e, 0)].packed.audio)
    assert collate([typed], LAYOUT).audio is None
    with pytest.raises(ValueError, match="empty"):
        collate([], LAYOUT)
    spoken = SequenceDataset(project.cfg, "train", tasks=["aqa"])[1]
    with pytest.raises(ValueError, match="frame arrays"):
        collate([Example(spoken.packed, [])], LAYOUT)


def test_dataset_pickles_for_workers_and_sampler_resumes(project):
    ds = SequenceDataset(project.cfg, "train")
    _ = ds[0]  # opens the safetensors handles
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone[(1, 0)].packed.input_ids, ds[(1, 0)].packed.input_ids)
    sampler = EpochSampler(len(ds), seed=0, epoch=1)
    order = list(sampler)
    assert sorted(i for _, i in order) == [0, 1, 2] and {e for e, _ in order} == {1}
    assert list(EpochSampler(len(ds), seed=0, epoch=1, start=1)) == order[1:]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=ds.collate)
    batches = list(loader)
    assert [b.input_ids.shape[0] for b in batches] == [2, 1]


def test_packing_config_max_length_applies(project):
    ds = SequenceDataset(project.cfg, "validation", packing=PackingConfig(max_length=12))
    assert len(ds[0].packed) == 12
