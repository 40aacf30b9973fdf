"""Resumable training checkpoints that are never loaded half-written.

Layout of one checkpoint (``<root>/step-00000040/``)::

    model/          HF-style weights (``SpeechLM.save_pretrained``), usable on their own
    engine/         DeepSpeed engine state (module, optimizer, LR scheduler) via ``engine.save_checkpoint``
    state.json      step, data position and run bookkeeping
    rng.pt          Python / NumPy / torch RNG states
    MANIFEST.json   size + sha256 of every file above, written last

Everything is written into a hidden ``.step-…partial`` directory that is renamed only once the manifest is
complete, so a process killed mid-save leaves a partial directory that is ignored (and removed) on resume.
A directory whose files do not match its manifest is reported and skipped, never loaded silently.

Hashing scales with the run: files are hashed once, when written, each rank hashing its share of the files
(``files[rank::world]``, the checkpoint directory is shared by all ranks). On resume every rank checks the
manifest and every file's size (a ``stat`` each, instant even for hundreds of GB); ``verify="full"`` also
re-hashes, again one share per rank, not every file on every rank. All ranks gather their findings, so they
agree on which checkpoint to load. Sizes catch what a crash or a full disk leaves (missing or truncated
files); only the hashes catch same-size corruption (bit rot, a bad copy from a remote).
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptalk.identity import file_digest
from deeptalk.training import distributed
from deeptalk.training.config import VERIFY_MODES

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
_NAME = re.compile(r"^step-(\d{8})$")
ENGINE_TAG = "state"
_HASH_THREADS = 4  # hashlib releases the GIL: a few files at once keep a fast disk busy


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def engine_dir(self) -> Path:
        return self.path / "engine"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _read_digest(path: Path) -> str:
    return file_digest(path, memo=False)  # a check against same-size corruption reads the bytes


def _sha256_many(paths: Sequence[Path]) -> list[str]:
    if len(paths) <= 1:
        return [_read_digest(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(_HASH_THREADS, len(paths))) as pool:
        return list(pool.map(_read_digest, paths))


def _share(items: Sequence, share: tuple[int, int]) -> list:
    """This rank's part of ``items`` (``share`` = ``(rank, world_size)``)."""
    rank, world = share
    return list(items[rank::world])


def hash_share(root: Path, share: tuple[int, int] = (0, 1)) -> dict[str, str]:
    """sha256 of this rank's share of the files under ``root`` (relative path -> hex digest)."""
    paths = _share(_files(root), share)
    return {str(p.relative_to(root)): digest for p, digest in zip(paths, _sha256_many(paths))}


def write_manifest(root: Path, step: int, hashes: dict[str, str] | None = None) -> None:
    """Write ``MANIFEST.json`` (size + sha256 per file); ``hashes`` from ``hash_share`` of every rank, or
    ``None`` to hash everything here."""
    hashes = hash_share(root) if hashes is None else hashes
    files = _files(root)
    missing = sorted({str(p.relative_to(root)) for p in files} - set(hashes))
    if missing:
        raise RuntimeError(f"no hash for {missing} in checkpoint {root}")
    entries = {
        str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": hashes[str(p.relative_to(root))]}
        for p in files
    }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"step": step, "files": entries}, indent=1, sort_keys=True))
    tmp.replace(root / MANIFEST)


def verify(root: Path, hashes: bool = True, share: tuple[int, int] = (0, 1)) -> str | None:
    """``None`` when ``root`` matches its manifest, else the reason it does not.

    Always: the manifest is readable, and every file it lists exists with its recorded size. With ``hashes``:
    also the sha256 of this rank's share of the files (``share`` = ``(rank, world_size)``; all of them alone).
    """
    manifest = root / MANIFEST
    if not manifest.is_file():
        return "no MANIFEST.json (save did not finish)"
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    if not files:
        return "manifest lists no files"
    for rel, meta in files.items():
        path = root / rel
        if not path.is_file():
            return f"missing file {rel}"
        if path.stat().st_size != meta["size"]:
            return f"size mismatch for {rel} ({path.stat().st_size} != {meta['size']} bytes)"
    if hashes:
        rels = _share(sorted(files), share)
        for rel, digest in zip(rels, _sha256_many([root / r for r in rels])):
            if digest != files[rel]["sha256"]:
                return f"checksum mismatch for {rel}"
    return None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Saves, verifies, finds and prunes the checkpoints of one training run."""

    def __init__(self, root: Path, keep: int = 2, verify: str = "full") -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        self.root = Path(root)
        self.keep = keep
        self.verify = verify

    def _dir(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def complete(self) -> list[tuple[int, Path]]:
        """Finished checkpoint directories (by name), newest first; contents are not verified here."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
        return sorted(found, reverse=True)

    def save(
        self,
        step: int,
        engine: Any,
        state: dict[str, Any],
        save_model: Callable[[Path], None] | None,
    ) -> Path:
        """Write checkpoint ``step`` atomically. All ranks call this (DeepSpeed shards its state per rank), and
        every rank calls ``save_model`` (gathering ZeRO-3 partitions is collective; it writes on rank 0 only)."""
        final = self._dir(step)
        tmp = self.root / f".{final.name}.partial"
        if distributed.is_main_process():
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        distributed.barrier()
        engine.save_checkpoint(str(tmp / "engine"), tag=ENGINE_TAG, save_latest=False)
        if save_model is not None:
            save_model(tmp / "model")
        if distributed.is_main_process():
            (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1, sort_keys=True))
            torch.save(rng_state(), tmp / "rng.pt")
        distributed.barrier()
        hashes = {k: v for part in distributed.all_gather(hash_share(tmp, distributed.rank_and_world()))
                  for k, v in part.items()}
        if distributed.is_main_process():
            write_manifest(tmp, step, hashes)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            self._prune()
            log.info("checkpoint saved: %s", final)
        distributed.barrier()
        return final

    def _prune(self) -> None:
        for _, path in self.complete()[self.keep :]:
            shutil.rmtree(path, ignore_errors=True)

    def latest_valid(self, fingerprint: str | None = None) -> Checkpoint | None:
        """The newest checkpoint that matches its manifest (and ``fingerprint``, the run's settings hash, when
        given); corrupt, partial or foreign ones are logged and skipped."""
        if self.root.is_dir():
            for partial in self.root.glob(".step-*.partial"):
                log.warning("ignoring partial checkpoint %s (the run stopped while saving it)", partial)
        for step, path in self.complete():
            start = time.perf_counter()
            reports = distributed.all_gather(verify(path, self.verify == "full", distributed.rank_and_world()))
            problem = next((r for r in reports if r is not None), None)
            log.info("checkpoint %s checked (%s) in %.2f s", path.name, self.verify, time.perf_counter() - start)
            if problem is not None:
                log.warning("skipping corrupt checkpoint %s: %s", path, problem)
                continue
            state = json.loads((path / "state.json").read_text())
            if state.get("step") != step:
                log.warning("skipping checkpoint %s: state.json says step %s", path, state.get("step"))
                continue
            if fingerprint is not None and state.get("fingerprint") != fingerprint:
                log.warning(
                    "skipping checkpoint %s: written by a run with other settings (fingerprint %s, now %s)",
                    path, state.get("fingerprint"), fingerprint,
                )
                continue
            return Checkpoint(path=path, step=step, state=state)
        return None

    def load(self, checkpoint: Checkpoint, engine: Any) -> None:
        """Restore engine (module + optimizer + scheduler) and RNG state from a verified checkpoint."""
        load_path, _ = engine.load_checkpoint(
            str(checkpoint.engine_dir), tag=ENGINE_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load the engine state from {checkpoint.engine_dir}")
        set_rng_state(torch.load(checkpoint.path / "rng.pt", weights_only=False))
        log.info("resumed from %s (step %d)", checkpoint.path, checkpoint.step)
