"""Step ``package``: put the gated final model into the BentoML model store and build the bento.

The packaged model is one directory (``deeptalk.inference.engine`` reads it): ``model/`` (SpeechLM),
``codec/``, ``tokenizer/`` and ``package.json`` (service settings, profile, metrics, gate verdict, sources).
It is assembled in the store's temporary directory and verified by loading it with the serving code before
``bentoml.models.create`` commits it, so a refused or broken package never replaces the model that was
packaged before. The step refuses (:class:`PackageRefused`, never retried) unless ``reports/gate.json`` exists,
says ``passed: true`` and names the stage being packaged (``evaluation.stage``) with the content digest that
stage's directory has now — and the copy in the store has it too, so exactly the judged weights ship.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from deeptalk.config import ProjectConfig
from deeptalk.evaluation.gates import model_digest
from deeptalk.inference.engine import CODEC_DIR, META_FILE, MODEL_DIR, TOKENIZER_DIR, Engine

log = logging.getLogger(__name__)

GATE_FILE = "gate.json"
SUMMARY_FILE = "package.json"


class PackageRefused(RuntimeError):
    """The gate verdict is missing, failed or about other weights; nothing was packaged."""


def check_judged(verdict: dict[str, Any], stage: str, model_dir: Path) -> str:
    """The digest of ``model_dir`` when it is the model the verdict judged; PackageRefused otherwise."""
    judged = verdict.get("model")
    if not isinstance(judged, dict) or not judged.get("sha256"):
        raise PackageRefused("gate verdict does not name the weights it judged (written by an older evaluate): "
                             "run the evaluate step again")
    if judged.get("stage") != stage:
        raise PackageRefused(f"gate verdict judged stage {judged.get('stage')!r}, not {stage!r} which would ship "
                             "(evaluation.stage): evaluate that stage first")
    digest = model_digest(model_dir)
    if digest != judged["sha256"]:
        raise PackageRefused(f"{model_dir} changed since the gate judged it (digest {digest[:12]} now, "
                             f"{judged['sha256'][:12]} judged): run the evaluate step again")
    return digest


def read_gate(reports: Path) -> dict[str, Any]:
    """The evaluation gate verdict; raises PackageRefused unless it exists and passed."""
    path = reports / GATE_FILE
    if not path.exists():
        raise PackageRefused(f"no gate verdict at {path}: run the evaluate step first")
    try:
        verdict = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PackageRefused(f"gate verdict {path} is not valid JSON: {err}") from err
    if not isinstance(verdict, dict) or verdict.get("passed") is not True:
        failures = verdict.get("failures", []) if isinstance(verdict, dict) else []
        reasons = "; ".join(f.get("message", str(f)) if isinstance(f, dict) else str(f) for f in failures)
        raise PackageRefused(f"quality gate failed, refusing to package: {reasons or 'passed is not true'}")
    return verdict


def _metadata_value(value: Any) -> Any:
    """BentoML metadata takes JSON scalars, lists and dicts; drop anything else."""
    if isinstance(value, dict):
        return {str(k): _metadata_value(v) for k, v in value.items() if _metadata_value(v) is not None}
    if isinstance(value, (list, tuple)):
        return [_metadata_value(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def assemble(target: Path, model_dir: Path, codec_dir: Path, tokenizer_dir: Path, meta: dict) -> None:
    """Copy the three asset directories and write ``package.json`` into ``target``."""
    for src, name in ((model_dir, MODEL_DIR), (codec_dir, CODEC_DIR), (tokenizer_dir, TOKENIZER_DIR)):
        if not src.is_dir():
            raise ValueError(f"cannot package: {src} does not exist")
        shutil.copytree(src, target / name, dirs_exist_ok=False)
    (target / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def package_model(
    cfg: ProjectConfig,
    *,
    stage: str | None = None,
    model_dir: Path | None = None,
    codec_dir: Path | None = None,
    tokenizer_dir: Path | None = None,
    build: bool = True,
    project_root: Path | None = None,
) -> dict[str, Any]:
    """Verify, store and (optionally) build; returns the summary written to ``reports/package.json``."""
    import bentoml

    paths = cfg.paths
    stage = stage or cfg.evaluation.stage
    verdict = read_gate(paths.reports)
    model_dir = model_dir or paths.stage(stage)
    digest = check_judged(verdict, stage, Path(model_dir))
    codec_dir = codec_dir or paths.codec
    tokenizer_dir = tokenizer_dir or paths.raw / "tokenizer"
    metrics = json.loads(paths.metrics.read_text()) if paths.metrics.exists() else {}
    name = cfg.service.model_tag.split(":")[0]
    meta = {
        "profile": cfg.profile,
        "stage": stage,
        "service": cfg.service.to_dict(),
        "metrics": metrics,
        "gate": {"passed": True, "model": verdict["model"], "checks": verdict.get("checks", [])},
        "sources": {"model": str(model_dir), "codec": str(codec_dir), "tokenizer": str(tokenizer_dir)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with bentoml.models.create(
        name,
        labels={"profile": cfg.profile, "stage": stage},
        metadata=_metadata_value({"profile": cfg.profile, "stage": stage, "metrics": metrics}),
    ) as stored:
        target = Path(stored.path)
        assemble(target, Path(model_dir), Path(codec_dir), Path(tokenizer_dir), meta)
        if model_digest(target / MODEL_DIR) != digest:
            raise PackageRefused(f"{model_dir} changed while it was copied into the store: run package again")
        from deeptalk.runtime import resolve_device

        # the serving code must accept it before it is committed
        engine = Engine.load(target, cfg.service, device=str(resolve_device(cfg.device)))
        log.info("packaged model loads: %d voices, codec %d Hz", len(engine.voices), engine.codec.sample_rate)
        del engine
    model_tag = str(stored.tag)
    log.info("stored %s in the BentoML model store", model_tag)
    summary: dict[str, Any] = {
        "model_tag": model_tag,
        "profile": cfg.profile,
        "stage": stage,
        "model_sha256": digest,
        "bento_tag": None,
    }
    if build:
        root = Path(project_root or paths.root).resolve()
        bento = bentoml.bentos.build_bentofile(str(root / "bentofile.yaml"), build_ctx=str(root))
        summary["bento_tag"] = str(bento.tag)
        log.info("built bento %s (containerize with `bentoml containerize %s`)", bento.tag, bento.tag)
    return summary


def run(cfg: ProjectConfig, stage: str | None = None, build: bool = True) -> dict:
    summary = package_model(cfg, stage=stage, build=build)
    out = cfg.paths.reports / SUMMARY_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
