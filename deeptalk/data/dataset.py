"""Training/eval dataset over the pack step's output, and the collate function to :class:`SpeechBatch`.

Each item is packed on access from the stored tokenised conversation, so the random choices of the
reference loader (which assistant turn a conversation ends at, speech vs text for RQA user turns) are
re-drawn every epoch, yet deterministic: the draw for a sample depends only on ``(seed, epoch, sample id)``.
A resumed run that asks for the same epoch and index gets bit-identical batches.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from deeptalk.batch import AudioSegments, SpeechBatch, pad_frames
from deeptalk.data.config import PackingConfig
from deeptalk.data.packing import (
    PackedSample,
    TokenizedSample,
    load_layout,
    pack_tokenized,
)
from deeptalk.data.processed import ProcessedStore
from deeptalk.data.schema import SPLITS, TASKS
from deeptalk.tokens import IGNORE_INDEX, TokenLayout

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

SEQUENCE_COLUMNS = {
    "id": "string",
    "task": "string",
    "split": "string",
    "fact_id": "string",
    "turns": "string",  # TokenizedSample.turns_json()
    "length": "int64",  # positions of the eval packing (last target turn, seeded speech draws)
    "n_audio": "int64",  # user-audio segments of the eval packing
    "spoken_target": "bool",
}


def sequences_file(directory: str | Path, split: str, task: str) -> Path:
    return Path(directory) / split / f"{task}.parquet"


def write_sequences(directory: str | Path, split: str, task: str, table: pd.DataFrame) -> Path:
    """Write one split/task table with ``SEQUENCE_COLUMNS`` (sorted by id: deterministic bytes)."""
    missing = sorted(set(SEQUENCE_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"sequence table lacks columns {missing}")
    path = sequences_file(directory, split, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table[list(SEQUENCE_COLUMNS)].astype(SEQUENCE_COLUMNS).sort_values("id").reset_index(drop=True)
    table.to_parquet(path, index=False)
    return path


def draw_rng(seed: int, epoch: int, sample_id: str) -> random.Random:
    """The per-sample generator of random packing choices (string seeds hash with SHA-512: process-stable)."""
    return random.Random(f"{seed}:{epoch}:{sample_id}")


@dataclass
class Example:
    """A packed sample with the encoder frames ``[F, D]`` of each entry of ``packed.audio``."""

    packed: PackedSample
    frames: list[np.ndarray] = field(default_factory=list)


class SequenceDataset(Dataset):
    """Packed conversations of one split (optionally some tasks) with their user-audio encoder frames.

    ``dataset[i]`` packs with the current epoch (:meth:`set_epoch`); ``dataset[(epoch, i)]`` names the epoch
    explicitly, which is what :class:`EpochSampler` yields (safe with DataLoader workers and resume).
    Evaluation datasets (``train=False``, the default except for ``"train"``) always end at the last
    spoken turn and use epoch 0's draws.
    """

    def __init__(
        self,
        cfg: ProjectConfig,
        split: str,
        tasks: Sequence[str] | None = None,
        *,
        train: bool | None = None,
        packing: PackingConfig | None = None,
        positions: Mapping[str, int] | None = None,
    ):
        """``positions``: positions each user utterance occupies, when a hearing head decides it
        (``deeptalk.model.hearing.heard_positions``); by default the encoder geometry's (the store's)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        directory = Path(cfg.paths.sequences)
        available = [t for t in TASKS if sequences_file(directory, split, t).exists()]
        if tasks is None:
            tasks = available
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; expected some of {TASKS}")
        missing = sorted(set(tasks) - set(available))
        if missing:
            raise ValueError(f"no packed {split} sequences for task(s) {missing} under {directory}")
        self.split = split
        self.tasks = tuple(t for t in TASKS if t in tasks)
        self.seed = int(cfg.seed)
        self.train = split == "train" if train is None else train
        self.packing = packing or cfg.packing
        self.layout = load_layout(directory)
        self.store = ProcessedStore(cfg.paths.processed)
        self.positions: Mapping[str, int] = self.store.n_positions if positions is None else positions
        frames = [pd.read_parquet(sequences_file(directory, split, t)) for t in self.tasks]
        table = (
            pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SEQUENCE_COLUMNS))
        )
        self.ids: list[str] = table["id"].tolist()
        self.task_of: list[str] = table["task"].tolist()
        self._turns: list[str] = table["turns"].tolist()
        self.lengths: list[int] = table["length"].astype(int).tolist()
        self.epoch = 0
        log.info("%s dataset: %d samples over tasks %s", split, len(self), ", ".join(self.tasks))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def tokenized(self, index: int) -> TokenizedSample:
        return TokenizedSample(
            self.ids[index], self.task_of[index], TokenizedSample.parse_turns(self._turns[index])
        )

    def __getitem__(self, key: int | tuple[int, int]) -> Example:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample = self.tokenized(index)
        rng = draw_rng(self.seed, epoch if self.train else 0, sample.id)
        packed = pack_tokenized(
            sample,
            self.layout,
            self.store.codes,
            self.positions,
            rng,
            train=self.train,
            config=self.packing,
            token_frames_by_utt=self.store.token_frames,
        )
        return Example(packed, [self.store.frames(a.utt_id) for a in packed.audio])

    def collate(self, examples: Sequence[Example]) -> SpeechBatch:
        """``DataLoader(ds, collate_fn=ds.collate)``."""
        return collate(examples, self.layout)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``: a permutation fixed by ``(seed, epoch)``, resumable from ``start``."""

    def __init__(self, n: int, seed: int, *, shuffle: bool = True, epoch: int = 0, start: int = 0):
        self.n, self.seed, self.shuffle, self.epoch, self.start = n, seed, shuffle, epoch, start

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.order()[self.start :]])

    def __len__(self) -> int:
        return max(0, self.n - self.start)


def collate(examples: Sequence[Example | PackedSample], layout: TokenLayout) -> SpeechBatch:
    """Right-pad to the longest sample (PAD_A / PAD_T ids, IGNORE labels, attention 0) and gather audio."""
    if not examples:
        raise ValueError("cannot collate an empty list of samples")
    examples = [e if isinstance(e, Example) else Example(e) for e in examples]
    s = layout.n_streams
    pad = torch.tensor(
        [layout.audio_special("PAD_A", i) for i in range(layout.n_audio_streams)]
        + [layout.text_special("PAD_T")],
        dtype=torch.long,
    )
    t_max = max(len(e.packed) for e in examples)
    b = len(examples)
    input_ids = pad.expand(b, t_max, s).clone()
    labels = torch.full((b, t_max, s), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros(b, t_max, dtype=torch.long)
    frames, n_pos, batch_index, start, targets = [], [], [], [], []
    for i, ex in enumerate(examples):
        p = ex.packed
        if p.input_ids.ndim != 2 or p.input_ids.shape[1] != s or p.labels.shape != p.input_ids.shape:
            raise ValueError(
                f"sample {p.sample_id!r}: ids {p.input_ids.shape} / labels {p.labels.shape} "
                f"do not match {s} streams"
            )
        if len(ex.frames) != len(p.audio):
            raise ValueError(
                f"sample {p.sample_id!r}: {len(p.audio)} audio segments but {len(ex.frames)} frame arrays"
            )
        n = len(p)
        input_ids[i, :n] = torch.from_numpy(np.asarray(p.input_ids, dtype=np.int64))
        labels[i, :n] = torch.from_numpy(np.asarray(p.labels, dtype=np.int64))
        attention[i, :n] = 1
        for ref, f in zip(p.audio, ex.frames, strict=False):
            frames.append(torch.as_tensor(np.asarray(f, dtype=np.float32)))
            n_pos.append(ref.n_positions)
            batch_index.append(i)
            start.append(ref.start)
            targets.append(ref.text)
    audio = None
    if frames:
        target_ids = torch.zeros(len(targets), max(1, max(len(t) for t in targets)), dtype=torch.long)
        for n, text in enumerate(targets):
            target_ids[n, : len(text)] = torch.tensor(text, dtype=torch.long)
        audio = AudioSegments(
            frames=pad_frames(frames),
            n_positions=torch.tensor(n_pos, dtype=torch.long),
            batch_index=torch.tensor(batch_index, dtype=torch.long),
            start=torch.tensor(start, dtype=torch.long),
            frame_lengths=torch.tensor([f.shape[0] for f in frames], dtype=torch.long),
            targets=target_ids,
            target_lengths=torch.tensor([len(t) for t in targets], dtype=torch.long),
        )
    return SpeechBatch(input_ids=input_ids, attention_mask=attention, labels=labels, audio=audio)

