"""The state of record: what each step was computed from, and whether its outputs on disk are still that.

One function, :func:`step_record`, gives a step's complete dependencies for a config:

- ``config``: the resolved values the step reads (profile preset + ``params.yaml`` + run overrides), chosen by the
  step's selectors (``training.s2a``, ``training:runner`` …), paths relative to the project root;
- ``code``: every ``deeptalk`` source file the step's module imports, transitively (static import graph), with
  its content hash;
- ``data``: the files and directories it reads; ``outs`` / ``metrics``: what it writes.

Both shells derive from it. DVC: ``dvc.yaml`` lists each step's data deps plus its *resolved file*
(``.deeptalk/resolved/<step>.json``, holding ``config`` and ``code``), which the always-run ``resolve_config``
stage rewrites from ``params.yaml``, the preset files, ``$DEEPTALK_PROFILE`` and the code; a changed value or
source file therefore changes exactly the resolved files of the steps that read it. Prefect (and ``compare``):
:func:`run_recorded` skips a step only when its stored record (``.deeptalk/records/<step>.json``) matches both
the current dependencies *and* the content of its outputs on disk, so a cache hit can never serve outputs that
another run replaced. Why not let Prefect's result cache decide: its key cannot see the outputs on disk, which is
exactly how a cached ``evaluate`` left another run's ``gate.json`` behind. Why not run every step through
``dvc repro``: steps must run in-process for the UI's log forwarding and progress artifacts, on gpu workers
whose project copies differ, and in ``compare``'s workspace, which is no DVC repository. After a step runs in a
DVC project the flow records it in ``dvc.lock`` too (``deeptalk.steps.dvcfile.dvc_commit``), so ``dvc status``
agrees.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeptalk.identity import code_digests, json_digest, tree_digest

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig
    from deeptalk.steps import StepSpec

log = logging.getLogger(__name__)

STATE_DIR = ".deeptalk"  # per project: resolved configs (DVC deps) and step records; never committed
RESOLVED_DIR = f"{STATE_DIR}/resolved"
RECORDS_DIR = f"{STATE_DIR}/records"
RUNNER = "training:runner"  # the training keys every trained stage reads (budgets and split choices excluded)
# training keys read by one step only (the expert split's, one baseline's, compare's) or changing no result (how
# resumed checkpoints are checked, as the runner's fingerprint also says); every other training key that is not a
# stage budget is a runner switch, which every trained stage reads
NOT_RUNNER = frozenset({"split_rule", "fixed_split", "min_speech_fraction", "max_speech_fraction",
                        "moextend_experts", "baselines", "profile_batches", "verify_checkpoints"})
TRAINING_FILES = ("configs/deepspeed",)  # non-Python files the training code reads


@dataclass(frozen=True)
class StepRecord:
    """A step's complete dependencies and outputs under one config (see the module docstring)."""

    step: str
    config: dict[str, Any]
    code: dict[str, str]  # root-relative source path → sha256
    data: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...] = ()

    @property
    def resolved(self) -> dict[str, Any]:
        """What the resolved file holds: everything but data and outputs (those DVC hashes itself)."""
        return {"step": self.step, "config": self.config, "code": self.code}

    @property
    def resolved_file(self) -> str:
        return resolved_file(self.step)


def resolved_file(step_name: str) -> str:
    return f"{RESOLVED_DIR}/{step_name}.json"


# ---- config ------------------------------------------------------------------------------------------------
def _plain(value: Any, root: str) -> Any:
    """JSON-able, with absolute paths under the project root made relative (a clone elsewhere hashes alike)."""
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, root) for v in value]
    if isinstance(value, str) and root and (value == root or value.startswith(root + os.sep)):
        return os.path.relpath(value, root)
    if isinstance(value, Path):
        return _plain(str(value), root)
    return value


def select_config(cfg: ProjectConfig, selectors: tuple[str, ...]) -> dict[str, Any]:
    """The values named by ``selectors``: ``section``, ``section.key`` (``gates`` is ``evaluation.gates``) or
    ``training:runner`` (the training keys that are neither a stage budget nor in :data:`NOT_RUNNER`). Unknown
    names are errors."""
    from deeptalk.training.config import StageBudget

    root = str(Path(cfg.paths.root).resolve())
    out: dict[str, Any] = {}
    for selector in selectors:
        if selector == RUNNER:
            training = cfg.training
            out[selector] = {f.name: _plain(getattr(training, f.name), root) for f in dataclasses.fields(training)
                             if f.name not in NOT_RUNNER and not isinstance(getattr(training, f.name), StageBudget)}
            continue
        section, _, key = selector.partition(".")
        if section == "gates":
            section, key = "evaluation", "gates" + (f".{key}" if key else "")
        if section not in {f.name for f in dataclasses.fields(cfg)} or section == "paths":
            raise ValueError(f"config selector {selector!r}: no section {section!r}")
        value: Any = getattr(cfg, section)
        for part in filter(None, key.split(".")):
            if not dataclasses.is_dataclass(value) or part not in {f.name for f in dataclasses.fields(value)}:
                raise ValueError(f"config selector {selector!r}: {part!r} is not a key of {section}")
            value = getattr(value, part)
        out[selector] = _plain(value, root)
    return out


# ---- code ----------------------------------------------------------------------------------------------
def _code_hashes(step: StepSpec) -> dict[str, str]:
    return code_digests(f"deeptalk.steps.{step.module}", TRAINING_FILES if step.heavy else ())


# ---- the record --------------------------------------------------------------------------------------------
def step_record(step: StepSpec, cfg: ProjectConfig) -> StepRecord:
    """The complete dependencies and outputs of ``step`` under ``cfg`` — the one source DVC's ``dvc.yaml``,
    its resolved files and every cache decision derive from."""
    config = select_config(cfg, step.config)
    if step.args:
        config["args"] = dict(step.args)
    return StepRecord(step=step.name, config=config, code=_code_hashes(step), data=step.data_deps(cfg),
                      outs=step.outs, metrics=step.metrics)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_resolved(record: StepRecord, root: Path) -> Path:
    """Write the step's resolved file (a DVC dep); left untouched when its content is already that."""
    path = Path(root) / record.resolved_file
    text = json.dumps(record.resolved, indent=1, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:
        _atomic_write(path, text)
    return path


def deps_fingerprint(record: StepRecord, root: Path) -> str:
    """Hash of everything the step is computed from: resolved config and code, and its data's content."""
    return json_digest({"resolved": record.resolved,
                        "data": {rel: tree_digest(Path(root) / rel) for rel in record.data}})


def outs_fingerprint(record: StepRecord, root: Path) -> dict[str, str]:
    return {rel: tree_digest(Path(root) / rel) for rel in (*record.outs, *record.metrics)}


def step_fingerprint(step: StepSpec, cfg: ProjectConfig) -> str:
    """A short, stable name for "this step's inputs as they are now" (for caches keyed by inputs)."""
    return f"{step.name}-{deps_fingerprint(step_record(step, cfg), cfg.paths.root)[:32]}"


def _record_path(root: Path, step_name: str) -> Path:
    return Path(root) / RECORDS_DIR / f"{step_name}.json"


def _stored(root: Path, step_name: str) -> dict:
    """The step's record, or {} when there is none or it cannot be read (then the step is simply not current)."""
    path = _record_path(root, step_name)
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("record %s is unreadable (%s): %s will run again", path, err, step_name)
        return {}
    return stored if isinstance(stored, dict) else {}


def stored_summary(root: Path, step_name: str) -> dict | None:
    return _stored(root, step_name).get("summary")


def is_current(step: StepSpec, cfg: ProjectConfig, record: StepRecord | None = None) -> bool:
    """True when ``step`` was recorded from exactly the current dependencies and its outputs on disk are still
    the ones it wrote (every byte)."""
    record = record or step_record(step, cfg)
    stored = _stored(cfg.paths.root, step.name)
    if not stored:
        return False
    return (stored.get("deps") == deps_fingerprint(record, cfg.paths.root)
            and stored.get("outs") == outs_fingerprint(record, cfg.paths.root))


def write_record(record: StepRecord, cfg: ProjectConfig, summary: dict) -> None:
    """Record that ``record``'s outputs on disk were computed from its dependencies (after a successful run)."""
    root = Path(cfg.paths.root)
    write_resolved(record, root)
    blob = {"step": record.step, "deps": deps_fingerprint(record, root), "outs": outs_fingerprint(record, root),
            "summary": summary}
    _atomic_write(_record_path(root, record.step), json.dumps(blob, indent=1, sort_keys=True, default=str) + "\n")


def forget(root: Path, step_name: str) -> None:
    """Drop a step's record (its outputs are about to change)."""
    _record_path(root, step_name).unlink(missing_ok=True)


def run_recorded(step: StepSpec, cfg: ProjectConfig, force: bool = False) -> tuple[dict, bool]:
    """Run ``step`` unless it is current (:func:`is_current`); returns ``(summary, ran)``. The record is dropped
    before the step writes and rewritten only after it succeeds, so a failed or killed step is never current."""
    record = step_record(step, cfg)
    write_resolved(record, cfg.paths.root)
    if not force and is_current(step, cfg, record):
        return stored_summary(cfg.paths.root, step.name) or {"step": step.name}, False
    forget(cfg.paths.root, step.name)
    summary = step.run(cfg)
    missing = [rel for rel in (*record.outs, *record.metrics) if not (Path(cfg.paths.root) / rel).exists()]
    if missing:
        raise RuntimeError(f"step {step.name} finished without writing {missing}: nothing recorded")
    write_record(record, cfg, summary)
    return summary, True
