"""The encode step's output (``data/processed/``): codec codes of spoken answers, log-mels of user audio.

Files (all byte-deterministic for the same inputs):
- ``index.parquet``: one row per utterance used by a sample (``INDEX_COLUMNS``), sorted by id;
- ``codes.safetensors``: ``utt_id → int16/int32 [K, T]`` codes of every speech target;
- ``mels.safetensors``: ``utt_id → float16 [n_mels, n]`` log-mels of every input utterance, trimmed of their
  constant padding tail (:func:`deeptalk.data.features.trim`);
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

from deeptalk.data.features import untrim

INDEX_FILE = "index.parquet"
CODES_FILE = "codes.safetensors"
MELS_FILE = "mels.safetensors"
META_FILE = "meta.json"

INDEX_COLUMNS = {
    "utt_id": "string",
    "split": "string",
    "speaker": "string",
    "is_input": "bool",  # a user turn's audio: has log-mels
    "is_target": "bool",  # an assistant's spoken answer: has codec codes
    "n_samples": "int64",  # 16 kHz samples of the input audio (0 if not an input)
    "n_positions": "int64",  # AudioInputConfig.n_positions of the input (0 if not an input)
    "mel_kept": "int64",  # stored (untrimmed) mel frames
    "mel_fill": "float64",  # value of the trimmed padding frames
    "n_frames": "int64",  # codec frames of the target (0 if not a target)
}


@dataclass(frozen=True)
class ProcessedMeta:
    n_mels: int
    mel_frames: int
    n_streams: int
    codebook_size: int
    frames_per_second: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"


def write_processed(
    directory: str | Path,
    index: pd.DataFrame,
    codes: Mapping[str, np.ndarray],
    mels: Mapping[str, np.ndarray],
    meta: ProcessedMeta,
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
        "mels": directory / MELS_FILE,
        "meta": directory / META_FILE,
    }
    index.to_parquet(paths["index"], index=False)
    save_file({k: np.ascontiguousarray(v, dtype=code_dtype) for k, v in codes.items()}, str(paths["codes"]))
    save_file({k: np.ascontiguousarray(v, dtype=np.float16) for k, v in mels.items()}, str(paths["mels"]))
    paths["meta"].write_text(meta.to_json())
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


class ProcessedStore:
    """Read access to ``data/processed``: codes, padded log-mels and positions per utterance."""

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
        self._fill = dict(zip(inputs["utt_id"], inputs["mel_fill"].astype(float), strict=False))
        self.targets = frozenset(index.loc[index["is_target"], "utt_id"])
        self.codes_file = _Tensors(directory / CODES_FILE)
        self.mels_file = _Tensors(directory / MELS_FILE)
        self.codes = CodesView(self)

    def mel(self, utt_id: str) -> np.ndarray:
        """Log-mel ``[n_mels, mel_frames]`` float32, padded exactly as the feature extractor padded it."""
        if utt_id not in self._fill:
            raise ValueError(f"no log-mel features for utterance {utt_id!r} in {self.directory}")
        trimmed = self.mels_file.get(utt_id).astype(np.float32)
        return untrim(trimmed, float(np.float16(self._fill[utt_id])), self.meta.mel_frames)
