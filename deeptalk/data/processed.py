"""The encode step's output (``data/processed/``): codec codes of spoken answers, encoder frames of user audio.

Files (all byte-deterministic for the same inputs):
- ``index.parquet``: one row per utterance used by a sample (``INDEX_COLUMNS``), sorted by id;
- ``codes.safetensors``: ``utt_id → int16/int32 [K, T]`` codes of every speech target;
- ``frames.safetensors``: ``utt_id → float16 [projector_stride · n_positions, encoder_dim]`` frozen-encoder
  outputs of every input utterance (:class:`deeptalk.data.features.SpeechFeatureExtractor`);
- ``timings.safetensors``: ``utt_id → float32 [n_tokens]`` start (seconds) of each text token of every speech
  target, from forced alignment (:mod:`deeptalk.data.alignment`; the aligned answer layout reads them);
- ``meta.json``: the feature and codec geometry they were made with.

:class:`ProcessedStore` reads them lazily (safetensors is memory-mapped), one handle per process so that
DataLoader workers can share a dataset object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import safe_open
from safetensors.numpy import save_file

from deeptalk.data.alignment import token_frames

INDEX_FILE = "index.parquet"
CODES_FILE = "codes.safetensors"
FRAMES_FILE = "frames.safetensors"
META_FILE = "meta.json"
TIMINGS_FILE = "timings.safetensors"

INDEX_COLUMNS = {
    "utt_id": "string",
    "split": "string",
    "speaker": "string",
    "is_input": "bool",  # a user turn's audio: has encoder frames
    "is_target": "bool",  # an assistant's spoken answer: has codec codes
    "n_samples": "int64",  # 16 kHz samples of the input audio (0 if not an input)
    "n_positions": "int64",  # AudioInputConfig.n_positions of the input (0 if not an input)
    "n_frames": "int64",  # codec frames of the target (0 if not a target)
}


@dataclass(frozen=True)
class ProcessedMeta:
    encoder_dim: int  # width of the stored encoder frames
    frames_per_position: int  # AudioInputConfig.projector_stride
    n_streams: int
    codebook_size: int
    frames_per_second: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"


def write_processed(
    directory: str | Path,
    index: pd.DataFrame,
    codes: Mapping[str, np.ndarray],
    frames: Mapping[str, np.ndarray],
    meta: ProcessedMeta,
    timings: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write the four files; ``index`` must have ``INDEX_COLUMNS``. Returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    missing = sorted(set(INDEX_COLUMNS) - set(index.columns))
    if missing:
        raise ValueError(f"processed index lacks columns {missing}")
    index = index[list(INDEX_COLUMNS)].astype(INDEX_COLUMNS).sort_values("utt_id").reset_index(drop=True)
    code_dtype = np.int16 if meta.codebook_size <= np.iinfo(np.int16).max else np.int32
    paths = {
        "index": directory / INDEX_FILE,
        "codes": directory / CODES_FILE,
        "frames": directory / FRAMES_FILE,
        "meta": directory / META_FILE,
    }
    index.to_parquet(paths["index"], index=False)
    save_file({k: np.ascontiguousarray(v, dtype=code_dtype) for k, v in codes.items()}, str(paths["codes"]))
    save_file({k: np.ascontiguousarray(v, dtype=np.float16) for k, v in frames.items()}, str(paths["frames"]))
    paths["meta"].write_text(meta.to_json())
    if timings is not None:
        paths["timings"] = directory / TIMINGS_FILE
        save_file(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in timings.items()}, str(paths["timings"])
        )
    return paths


class _Tensors:
    """A lazily opened safetensors file; the handle is per process (not pickled)."""

    def __init__(self, path: Path):
        if not path.exists():
            raise ValueError(f"missing {path}; run the encode step first")
        self.path = path
        self._handle = None

    def get(self, key: str) -> np.ndarray:
        if self._handle is None:
            self._handle = safe_open(str(self.path), framework="np")
        return self._handle.get_tensor(key)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_handle": None}


class CodesView(Mapping):
    """``utt_id → int64 [K, T]`` codes, read on access (what :func:`pack_tokenized` takes)."""

    def __init__(self, store: ProcessedStore):
        self._store = store

    def __getitem__(self, utt_id: str) -> np.ndarray:
        if utt_id not in self._store.targets:
            raise KeyError(utt_id)
        return self._store.codes_file.get(utt_id).astype(np.int64)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._store.targets

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._store.targets))

    def __len__(self) -> int:
        return len(self._store.targets)


class TokenFramesView(Mapping):
    """``utt_id → int64 [n_tokens]`` codec frame where each text token of a speech target starts (what
    :func:`pack_tokenized` takes for the aligned answer layout); empty when encode stored no timings."""

    def __init__(self, store: ProcessedStore):
        self._store = store
        path = store.directory / TIMINGS_FILE
        self._file = _Tensors(path) if path.exists() else None

    def __getitem__(self, utt_id: str) -> np.ndarray:
        if self._file is None or utt_id not in self._store.targets:
            raise KeyError(utt_id)
        starts = self._file.get(utt_id)
        return token_frames(starts, self._store.meta.frames_per_second, self._store.n_frames[utt_id])

    def __contains__(self, utt_id: object) -> bool:
        return self._file is not None and utt_id in self._store.targets

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._store.targets) if self._file is not None else [])

    def __len__(self) -> int:
        return len(self._store.targets) if self._file is not None else 0


class ProcessedStore:
    """Read access to ``data/processed``: codes, encoder frames and positions per utterance."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        for name in (INDEX_FILE, META_FILE):
            if not (directory / name).exists():
                raise ValueError(f"missing {directory / name}; run the encode step first")
        self.directory = directory
        self.meta = ProcessedMeta(**json.loads((directory / META_FILE).read_text()))
        index = pd.read_parquet(directory / INDEX_FILE)
        inputs = index[index["is_input"]]
        self.n_positions: dict[str, int] = dict(
            zip(inputs["utt_id"], inputs["n_positions"].astype(int), strict=False)
        )
        self.targets = frozenset(index.loc[index["is_target"], "utt_id"])
        targets = index[index["is_target"]]
        self.n_frames: dict[str, int] = dict(
            zip(targets["utt_id"], targets["n_frames"].astype(int), strict=False)
        )
        self.codes_file = _Tensors(directory / CODES_FILE)
        self.frames_file = _Tensors(directory / FRAMES_FILE)
        self.codes = CodesView(self)
        self.token_frames = TokenFramesView(self)

    def frames(self, utt_id: str) -> np.ndarray:
        """Encoder frames ``[projector_stride · n_positions, encoder_dim]`` float32 of one input utterance."""
        if utt_id not in self.n_positions:
            raise ValueError(f"no encoder frames for utterance {utt_id!r} in {self.directory}")
        return self.frames_file.get(utt_id).astype(np.float32)
