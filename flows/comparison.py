"""The paper's comparison: workspaces, units and their caches (``python -m flows compare --profile small --seeds 0,1,2``).

**Fair protocol** (README, "The paper's comparison"). Per seed, every system starts from the same S1 checkpoint
(the seed's text-pretrained base, aligned), sees the same speech data (one corpus, codec and packed sequences
shared by all seeds) and learns at the same rule: each phase takes the learning rate, batch and step count of
the DeepTalk stage it mirrors (``training.s2a/s2b/s3``; ``plain`` trains once with ``training.plain``, whose
steps are S2a+S2b+S3's). Systems:

- ``deeptalk``: adaptive split (``profile_experts``) → S2a → S2b → S3;
- ``training.baselines`` (default the table: ``plain``, ``fixed``, ``moextend``, ``strict``, ``random``,
  ``plain-staged``), or any of the ablations (``renormalised-gate``, ``s2a-frozen-<part>``), see
  the chain table (:mod:`deeptalk.training.stages`).

**Units.** Each system × seed is one unit, trained through the step registry (``train_<stage>`` via the state of record,
``deeptalk.steps.record.run_recorded``; the one runner resumes an interrupted phase from its checkpoint) in its
seed's workspace
``runs/compare/<profile>/seed<k>/``. The data chain runs once in ``runs/compare/<profile>/shared/`` (linked
into each seed's workspace); a seed's ``text_pretrain``, ``align`` and ``profile_experts`` run once and are
shared by all its systems. A unit's result (``units/<system>.json``) is written when it finishes, with a key
(its phases' fingerprints, the evaluation settings and code); a re-run reuses it. The reports are rewritten
after every unit, so a long comparison can be stopped and resumed, and read while it runs.

**The retention-vs-speech curve.** Phases export their weights every ``curve_every`` steps
(``training.curve_every``; default: the DeepTalk chain cut into ~4 intervals); each snapshot and each phase
output is evaluated for text ability (held-out typed QA, answer and text perplexity) and held-out ASR WER, then
its weights are deleted. **Matched speech quality**: the ASR-WER target is the best WER that every unit reaches
(the largest of the units' smallest WERs); each unit's text drop is read at its first curve point at or below
it, next to its end-of-training numbers. The end of training is evaluated in full (spoken QA, TTS as well).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deeptalk.evaluation.comparison_report import write_reports
from deeptalk.evaluation.comparison_stats import summarise
from deeptalk.evaluation.curve import EvalContext, curve_metrics, curve_point
from deeptalk.identity import code_digest

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or installation) holding flows/ and deeptalk/
log = logging.getLogger(__name__)


SHARED_LINKS = ("data", "models/codec", "models/encoder")  # the seed workspaces read these from shared/


CURVE_INTERVALS = 4  # default snapshots over DeepTalk's S2a+S2b+S3 (a curve point costs a full text + ASR evaluation)


@dataclass(frozen=True)
class System:
    name: str
    stages: tuple[str, ...]  # stage plans trained in order (registry: train_<stage>)


def systems_for(cfg: ProjectConfig, names: list[str] | None = None) -> list[System]:
    """DeepTalk's chain, then the baselines (``names``, default ``cfg.training.baselines``), each one plan."""
    from deeptalk.training.stages import BASELINES, DEEPTALK_STAGES

    names = list(cfg.training.baselines) if names is None else names
    unknown = sorted(set(names) - set(BASELINES) - {"deeptalk"})
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose deeptalk or any of {', '.join(BASELINES)}")
    return [System("deeptalk", DEEPTALK_STAGES)] + [System(b, (b,)) for b in names if b != "deeptalk"]


def default_curve_every(cfg: ProjectConfig) -> int:
    t = cfg.training
    return max(1, math.ceil((t.s2a.steps + t.s2b.steps + t.s3.steps) / CURVE_INTERVALS))


# ---- workspaces ---------------------------------------------------------------------------------------------
def compare_root(cfg: ProjectConfig) -> Path:
    return Path(cfg.paths.root) / "runs" / "compare" / cfg.profile


def _with_root(cfg: ProjectConfig, root: Path, **changes: Any) -> ProjectConfig:
    """``cfg`` working in ``root``: paths, and config paths resolved under the old root (the encoder), moved."""
    from deeptalk.config import Paths

    root.mkdir(parents=True, exist_ok=True)
    audio = cfg.audio_input
    if audio.encoder_checkpoint is not None:
        enc, old = Path(audio.encoder_checkpoint), Path(cfg.paths.root).resolve()
        if enc.is_absolute() and enc.resolve().is_relative_to(old):
            audio = dataclasses.replace(audio, encoder_checkpoint=str(root / enc.resolve().relative_to(old)))
    return dataclasses.replace(cfg, paths=Paths(root), audio_input=audio, **changes)


def shared_workspace(cfg: ProjectConfig) -> ProjectConfig:
    """Where the data chain runs once (at ``cfg.seed``): corpus, codec, encoder, packed sequences."""
    return _with_root(cfg, compare_root(cfg) / "shared")


def seed_workspace(cfg: ProjectConfig, seed: int, systems: list[System], curve_every: int) -> ProjectConfig:
    """``runs/compare/<profile>/seed<k>`` with the shared data linked in, ``seed`` and the systems' plans."""
    shared = compare_root(cfg) / "shared"
    training = dataclasses.replace(cfg.training, curve_every=curve_every,
                                   baselines=tuple(s.name for s in systems if s.name != "deeptalk"))
    work = _with_root(cfg, compare_root(cfg) / f"seed{seed}", seed=seed, training=training)
    for rel in SHARED_LINKS:
        link = Path(work.paths.root) / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            if link.exists():
                raise ValueError(f"{link} exists and is not the link to {shared / rel}; remove it to re-link")
            link.symlink_to(shared / rel, target_is_directory=True)
    return work


# ---- steps through the registry -----------------------------------------------------------------------------
def ensure_step(name: str, cfg: ProjectConfig) -> str:
    """Run registry step ``name`` in ``cfg``'s workspace unless the state of record says its outputs on disk were
    computed from exactly its current dependencies (``deeptalk.steps.record.run_recorded``); "cached" or "ran"."""
    from deeptalk.steps import find_step
    from deeptalk.steps.record import run_recorded

    _, ran = run_recorded(find_step(name), cfg)
    log.info("compare: %s %s", name, "ran" if ran else "cached (inputs and outputs as recorded)")
    return "ran" if ran else "cached"


def prepare_data(cfg: ProjectConfig) -> dict[str, str]:
    """The data chain in the shared workspace (once for all seeds and systems)."""
    from deeptalk.steps import DATA_STEPS

    work = shared_workspace(cfg)
    return {name: ensure_step(name, work) for name in DATA_STEPS}


def prepare_seed(work: ProjectConfig) -> dict[str, str]:
    """The seed's base LLM, S1 and expert split: the starting point every system of the seed shares (no curve
    snapshots: only the systems' speech training is on the curve)."""
    from deeptalk.steps import SEED_STEPS

    start = dataclasses.replace(work, training=dataclasses.replace(work.training, curve_every=0))
    return {name: ensure_step(name, start) for name in SEED_STEPS}


# ---- units -------------------------------------------------------------------------------------------------
def _eval_code() -> str:
    """The evaluation code a unit's metrics depend on: every module the full and the curve evaluation import."""
    return code_digest("deeptalk.evaluation.suite", "deeptalk.evaluation.curve")[:16]


def _phases(work: ProjectConfig, system: System) -> list[tuple[Any, Any]]:
    from deeptalk.training.stages import get_stage

    plans = [get_stage(stage) for stage in system.stages]
    return [(plan, spec) for plan in plans for spec in plan.phases]  # phase_dir tells the last phase by identity


def _key(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so a stored key compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _summary(path: Path) -> dict[str, Any]:
    file = path / "train_summary.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def system_curve(work: ProjectConfig, system: System, ctx: EvalContext) -> list[dict[str, Any]]:
    """Evaluate every snapshot and phase output of ``system`` in training order (results cached per point under
    ``curve/``, keyed by the phase's fingerprint and the evaluation settings, not the evaluation code: snapshot
    weights are deleted once evaluated, so a point cannot be re-measured without retraining the phase)."""
    from deeptalk.training.runner import phase_dir, snapshot_dir

    points: list[dict[str, Any]] = []
    done_steps, done_tokens = 0, 0
    settings = dataclasses.asdict(work.evaluation)
    for plan, spec in _phases(work, system):
        out = phase_dir(work, plan, spec)
        summary = _summary(out)
        steps, tokens = int(summary.get("steps", 0)), int(summary.get("tokens", 0))
        snaps = sorted(snapshot_dir(work, spec).glob("step*")) if snapshot_dir(work, spec).is_dir() else []
        cache_dir = Path(work.paths.root) / "curve" / system.name / spec.name.replace("/", "__")
        stored = sorted(cache_dir.glob("step*.json")) if cache_dir.is_dir() else []
        at = sorted({int(p.name[4:10]) for p in snaps} | {int(p.stem[4:]) for p in stored} | {steps})
        for step in at:
            cache = cache_dir / f"step{step:06d}.json"
            key = _key({"fingerprint": summary.get("fingerprint"), "evaluation": settings})
            record = json.loads(cache.read_text()) if cache.is_file() else {}
            if record.get("key") != key:
                model = out if step == steps else snapshot_dir(work, spec) / f"step{step:06d}"
                if not (model / "speech_lm.json").is_file():
                    log.warning("compare: %s %s step %d: stored point is stale and its weights are gone; left out "
                                "(delete %s to retrain the phase with snapshots)", system.name, spec.name, step, out)
                    continue
                record = {"key": key, "metrics": curve_metrics(work, model, ctx)}
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(record, default=str))
            if step < steps:
                shutil.rmtree(snapshot_dir(work, spec) / f"step{step:06d}", ignore_errors=True)
            points.append({"phase": spec.name, "phase_step": step, "steps": done_steps + step,
                           "tokens": done_tokens + (round(tokens * step / steps) if steps else 0),
                           **curve_point(record["metrics"])})
        done_steps, done_tokens = done_steps + steps, done_tokens + tokens
    return points


def run_unit(work: ProjectConfig, system: System, ctx: EvalContext, start: dict[str, Any]) -> dict[str, Any]:
    """Train ``system`` (its stages through the registry) in the seed workspace, evaluate its curve (from
    ``start``, the seed's S1 metrics) and its final model; the result is written to ``units/<system>.json`` and
    reused while its key holds."""
    from deeptalk.evaluation.suite import evaluate_model
    from deeptalk.model.freezing import count_trainable
    from deeptalk.steps import find_step
    from deeptalk.training.runner import phase_dir, prepare_model
    from deeptalk.data.packing import load_layout

    began = time.perf_counter()
    for stage in system.stages:
        ensure_step(find_step(stage).name, work)
    train_s = time.perf_counter() - began
    phases = [(spec, _summary(phase_dir(work, plan, spec))) for plan, spec in _phases(work, system)]
    key = _key({"phases": {spec.name: s.get("fingerprint") for spec, s in phases}, "code": _eval_code(),
                "evaluation": dataclasses.asdict(work.evaluation), "curve_every": work.training.curve_every})
    path = Path(work.paths.root) / "units" / f"{system.name}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            log.info("compare: %s seed %d up to date", system.name, work.seed)
            return stored
    t0 = time.perf_counter()
    curve = [{"phase": "s1", "phase_step": 0, "steps": 0, "tokens": 0, **curve_point(start)},
             *system_curve(work, system, ctx)]
    curve_s, t0 = time.perf_counter() - t0, time.perf_counter()
    final = work.paths.stage(system.stages[-1])
    metrics = evaluate_model(work, final, held=ctx.held, base=ctx.base, scorer=ctx.scorer, latency=False).metrics
    eval_s = time.perf_counter() - t0
    layout = load_layout(work.paths.sequences)
    trainable = {}
    for plan, spec in _phases(work, system):
        model, _ = prepare_model(spec, plan, work, layout)
        trainable[spec.name] = count_trainable(model)
        total = sum(p.numel() for p in model.parameters())
        del model
    result = {
        "system": system.name, "seed": work.seed, "stages": list(system.stages), "key": key,
        "train_wall_s": round(sum(s.get("wall_s", 0.0) for _, s in phases), 1),
        "unit_wall_s": round(time.perf_counter() - began, 1), "train_call_s": round(train_s, 1),
        "curve_eval_s": round(curve_s, 1), "curve_points": len(curve) - 1, "final_eval_s": round(eval_s, 1),
        "phases": {spec.name: {f: s.get(f) for f in ("steps", "wall_s", "tokens", "tokens_per_s")}
                   for spec, s in phases},
        "trainable_params": {"by_phase": trainable, "max": max(trainable.values()), "total_params": total},
        "metrics": metrics, "curve": curve,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, path)
    return result


def reference_points(work: ProjectConfig, ctx: EvalContext) -> dict[str, Any]:
    """The seed's shared start: the base (drop 0 by definition) and S1 (curve point 0 of every system)."""
    from deeptalk.evaluation.suite import text_metrics

    path = Path(work.paths.root) / "units" / "_s1.json"
    key = _key({"s1": _summary(work.paths.stage("s1")).get("fingerprint"),
                "evaluation": dataclasses.asdict(work.evaluation)})
    if path.is_file() and json.loads(path.read_text()).get("key") == key:
        return json.loads(path.read_text())
    result = {"key": key, "base": {"text": text_metrics(ctx.base, ctx.base, ctx.min_base_qa_correct)},
              "s1": curve_metrics(work, work.paths.stage("s1"), ctx)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


# ---- the comparison ----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def report(cfg: ProjectConfig, seeds: list[int], systems: list[System], units: dict[str, dict[int, dict]],
           references: dict[int, dict], timings: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """The result the reports render: where and how it was measured, the statistics, every unit."""
    return {
        "profile": cfg.profile, "seeds": seeds,
        "command": f"python -m flows compare --profile {cfg.profile} --seeds {','.join(map(str, seeds))}",
        "commit": _commit(), "machine": machine(), "workspace": str(compare_root(cfg)),
        "protocol": ("same S1 checkpoint per seed for every system; same corpus, codec and packed data for all; "
                     "each phase at the budget (steps, batch, lr) of the DeepTalk stage it mirrors"),
        "curve_every": next((u["key"]["curve_every"] for d in units.values() for u in d.values()), None),
        "references": {str(k): v for k, v in references.items()},
        **summarise([s.name for s in systems], units, references),
        "units": {name: {str(s): u for s, u in d.items()} for name, d in units.items()},
        "timings": timings, "wall_s": round(wall_s, 1),
    }


class Comparison:
    """One comparison's state (module docstring): the steps a caller sequences, from ``run_compare`` or from the
    Prefect flow (``flows.compare``), which runs each as a task."""

    def __init__(self, cfg: ProjectConfig, seeds: list[int], systems: list[str] | None = None,
                 curve_every: int | None = None) -> None:
        if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
        if curve_every is not None and curve_every < 1:
            raise ValueError(f"curve_every must be >= 1, got {curve_every}")
        self.cfg, self.seeds, self.systems = cfg, list(seeds), systems_for(cfg, systems)
        self.curve_every = curve_every or cfg.training.curve_every or default_curve_every(cfg)
        self.started = time.perf_counter()
        self.timings: dict[str, Any] = {"data": {}, "seeds": {}}
        self.units: dict[str, dict[int, dict]] = {s.name: {} for s in self.systems}
        self.references: dict[int, dict] = {}
        self._seed: dict[int, tuple[ProjectConfig, EvalContext]] = {}

    def prepare_data(self) -> dict[str, str]:
        t0 = time.perf_counter()
        steps = prepare_data(self.cfg)
        self.timings["data"] = {"steps": steps, "wall_s": round(time.perf_counter() - t0, 1)}
        return steps

    def prepare_seed(self, seed: int) -> dict[str, str]:
        t0 = time.perf_counter()
        work = seed_workspace(self.cfg, seed, self.systems, self.curve_every)
        steps = prepare_seed(work)
        ctx = EvalContext.for_seed(work)
        self.references[seed] = reference_points(work, ctx)
        self._seed[seed] = (work, ctx)
        self.timings["seeds"][seed] = {"steps": steps, "shared_wall_s": round(time.perf_counter() - t0, 1)}
        return steps

    def run_unit(self, seed: int, system: str) -> dict[str, Any]:
        if seed not in self._seed:
            raise ValueError(f"seed {seed} is not prepared; call prepare_seed({seed}) first")
        work, ctx = self._seed[seed]
        chosen = next((s for s in self.systems if s.name == system), None)
        if chosen is None:
            raise ValueError(f"system {system!r} is not in this comparison: {[s.name for s in self.systems]}")
        unit = run_unit(work, chosen, ctx, self.references[seed]["s1"])
        self.units[system][seed] = unit
        log.info("compare: %s seed %d done (%.0f s)", system, seed, unit["unit_wall_s"])
        self.write()
        return unit

    def write(self) -> dict[str, Any]:
        result = report(self.cfg, self.seeds, self.systems, self.units, self.references, self.timings,
                        time.perf_counter() - self.started)
        write_reports(self.cfg.paths.reports, result)
        return result


def run_compare(cfg: ProjectConfig, seeds: list[int], systems: list[str] | None = None,
                curve_every: int | None = None) -> dict[str, Any]:
    """Every system × seed as a unit (module docstring); writes ``reports/compare.{json,md,html}`` after each
    unit and returns the final report."""
    comparison = Comparison(cfg, seeds, systems, curve_every)
    log.info("compare (%s): %d systems x %d seeds in %s", cfg.profile, len(comparison.systems), len(seeds),
             compare_root(cfg))
    comparison.prepare_data()
    for seed in seeds:
        comparison.prepare_seed(seed)
        for system in comparison.systems:
            comparison.run_unit(seed, system.name)
    result = comparison.write()
    log.info("compare: %s (wall %.0f s)", result["claim"]["statement"], result["wall_s"])
    return result
