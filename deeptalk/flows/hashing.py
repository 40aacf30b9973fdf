"""Content fingerprints of a step's inputs: the Prefect cache key, mirroring what DVC hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from deeptalk.config import ProjectConfig
from deeptalk.steps import StepSpec

IGNORED_PARTS = {"__pycache__", ".ipynb_checkpoints"}


def _hash_path(digest: "hashlib._Hash", root: Path, rel: str) -> None:
    path = root / rel
    if not path.exists():
        digest.update(f"missing:{rel}".encode())
        return
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if IGNORED_PARTS & set(file.parts) or file.suffix == ".pyc":
            continue
        digest.update(str(file.relative_to(root)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def params_of(step: StepSpec, cfg: ProjectConfig) -> dict:
    """The config values behind a step's ``params`` sections (``gates`` lives in ``evaluation``)."""
    values = {}
    for name in step.params:
        attr = "evaluation" if name == "gates" else name
        value = getattr(cfg, attr)
        values[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return values


def step_fingerprint(step: StepSpec, cfg: ProjectConfig) -> str:
    digest = hashlib.sha256()
    header = {"step": step.name, "args": step.args, "profile": cfg.profile, "params": params_of(step, cfg)}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for dep in step.deps:
        _hash_path(digest, cfg.paths.root, dep)
    return f"{step.name}-{digest.hexdigest()[:32]}"
