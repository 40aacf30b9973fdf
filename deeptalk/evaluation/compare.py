"""The paper's comparison: ``python -m deeptalk compare --profile small --seeds 0,1,2``.

**Fair protocol** (README, "The paper's comparison"). Per seed, every system starts from the same S1 checkpoint
(the seed's text-pretrained base, aligned), sees the same speech data (one corpus, codec and packed sequences
shared by all seeds) and learns at the same rule: each phase takes the learning rate, batch and step count of
the DeepTalk stage it mirrors (``training.s2a/s2b/s3``; ``plain`` trains once with ``training.plain``, whose
steps are S2a+S2b+S3's). Systems:

- ``deeptalk``: adaptive split (``profile_experts``) → S2a → S2b → S3;
- ``training.baselines`` (default the table: ``plain``, ``fixed``, ``moextend``, ``strict``, ``random``,
  ``plain-staged``), or any of the ablations (``renormalised-gate``, ``s2a-frozen-<part>``), see
  :mod:`deeptalk.training.stages`.

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
import hashlib
import html
import json
import logging
import math
import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig
    from deeptalk.evaluation.heldout import HeldOut
    from deeptalk.evaluation.text_ability import TextAbility

log = logging.getLogger(__name__)


SHARED_LINKS = ("data", "models/codec", "models/encoder")  # the seed workspaces read these from shared/
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
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


# ---- evaluation ------------------------------------------------------------------------------------------------
@dataclass
class EvalContext:
    """What every evaluation of a seed shares: held-out items, tokenizer, the base's scores, the scorer."""

    held: HeldOut
    tokenizer: Any
    base: TextAbility
    scorer: Any
    min_base_qa_correct: int

    @classmethod
    def for_seed(cls, work: ProjectConfig, scorer: Any = None) -> EvalContext:
        from deeptalk.evaluation.asr_scorer import scorer_for
        from deeptalk.evaluation.heldout import heldout_for
        from deeptalk.evaluation.suite import base_text_ability
        from deeptalk.evaluation.text_ability import load_tokenizer

        held = heldout_for(work)
        tokenizer = load_tokenizer(work)
        return cls(held, tokenizer, base_text_ability(work, held, tokenizer), scorer or scorer_for(work),
                   work.evaluation.min_base_qa_correct)


def curve_metrics(work: ProjectConfig, model_dir: Path, ctx: EvalContext) -> dict[str, Any]:
    """The curve's cheap evaluation: text ability vs the base and held-out ASR WER (no speech generated)."""
    from deeptalk.evaluation.asr_eval import evaluate_asr
    from deeptalk.evaluation.engine import load_engine
    from deeptalk.evaluation.suite import text_ability_of, text_metrics

    text = text_metrics(ctx.base, text_ability_of(model_dir, work, ctx.held, ctx.tokenizer), ctx.min_base_qa_correct)
    out: dict[str, Any] = {"text": text}
    if ctx.held.asr:
        asr = evaluate_asr(load_engine(work, model_dir), ctx.held.asr)
        out["asr"] = {k: v for k, v in asr.items() if k != "examples"}
    return out


def _eval_code() -> str:
    digest = hashlib.sha256()
    for rel in ("deeptalk/evaluation", "deeptalk/inference"):
        for f in sorted((PACKAGE_ROOT / rel).rglob("*.py")):
            if f.name != "compare.py":
                digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


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
                           **_point(record["metrics"])})
        done_steps, done_tokens = done_steps + steps, done_tokens + tokens
    return points


def _point(metrics: dict[str, Any]) -> dict[str, Any]:
    text, asr = metrics.get("text", {}), metrics.get("asr", {})
    return {"drop_pct": text.get("drop_pct"), "qa_acc": text.get("qa_acc"), "answer_ppl": text.get("answer_ppl"),
            "ppl": text.get("ppl"), "asr_wer": asr.get("wer")}


# ---- units -----------------------------------------------------------------------------------------------------
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
    curve = [{"phase": "s1", "phase_step": 0, "steps": 0, "tokens": 0, **_point(start)},
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


# ---- the command -------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class Comparison:
    """One comparison's state (module docstring): the steps a caller sequences, from ``run_compare`` or from the
    Prefect flow (``deeptalk.flows.compare``), which runs each as a task."""

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
        write_reports(self.cfg, result)
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


# ---- statistics and the report ---------------------------------------------------------------------------------
METRICS = (  # (name, path in a unit's metrics, format)
    ("text drop %", ("text", "drop_pct"), "{:.1f}", ("text", "drop_pct_se")),
    ("QA drop %", ("text", "drop_pct_qa_acc"), "{:.1f}", ("text", "drop_pct_qa_acc_se")),
    ("text QA acc", ("text", "qa_acc"), "{:.3f}", ("text", "qa_acc_se")),
    ("answer ppl", ("text", "answer_ppl"), "{:.2f}", ("text", "answer_ppl_se")),
    ("text ppl", ("text", "ppl"), "{:.1f}", ("text", "ppl_se")),
    ("ASR WER", ("asr", "wer"), "{:.3f}", None),
    ("spoken QA s→t", ("spoken_qa", "s2t_acc"), "{:.3f}", None),
    ("distinct answers", ("spoken_qa", "distinct_answers"), "{:.1f}", None),
    ("TTS WER", ("tts", "wer_vs_truth"), "{:.3f}", None),
)


def _get(metrics: dict, path: tuple[str, str] | None) -> float | None:
    if path is None:
        return None
    value = metrics.get(path[0], {}).get(path[1])
    return None if value is None else float(value)


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max over seeds (None values dropped)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def matched_quality(units: dict[str, dict[int, dict]]) -> dict[str, Any]:
    """The ASR-WER target every unit reaches (the largest per-unit minimum over its curve) and each unit's
    text-drop figures at its first curve point at or below it."""
    minima = [min(p["asr_wer"] for p in u["curve"] if p["asr_wer"] is not None)
              for per_seed in units.values() for u in per_seed.values()
              if any(p["asr_wer"] is not None for p in u["curve"])]
    if not minima:
        return {"target_asr_wer": None, "systems": {}}
    target = max(minima)
    out: dict[str, Any] = {}
    for name, per_seed in units.items():
        at = {}
        for seed, unit in per_seed.items():
            hit = next((p for p in unit["curve"] if p["asr_wer"] is not None and p["asr_wer"] <= target + 1e-12), None)
            at[seed] = hit
        out[name] = {"per_seed": at, **{k: spread([p[k] if p else None for p in at.values()])
                                        for k in ("drop_pct", "qa_acc", "answer_ppl", "ppl", "steps")}}
    return {"target_asr_wer": target, "systems": out}


def claim(summary: dict[str, dict]) -> dict[str, Any]:
    """The paper's expectation: DeepTalk's text drop is smaller than the plain fine-tune's, and ≤ ⅓ of it,
    with the seeds' spread smaller than the gap (means over seeds at end of training)."""
    ours, plain = summary.get("deeptalk", {}).get("text drop %"), summary.get("plain", {}).get("text drop %")
    if not ours or not plain or ours["mean"] is None or plain["mean"] is None:
        return {"reproduced": None, "statement": "not decidable: DeepTalk's or plain's text drop is missing"}
    gap = plain["mean"] - ours["mean"]
    if ours["n"] < 2 or plain["n"] < 2:
        return {"deeptalk_drop_pct": ours["mean"], "plain_drop_pct": plain["mean"], "gap": gap, "seed_sd": None,
                "reproduced": None, "within_a_third": None,
                "statement": (f"DeepTalk's text drop ({ours['mean']:.1f} %) vs the plain fine-tune's "
                              f"({plain['mean']:.1f} %) from one seed: no spread to judge the gap against, so "
                              "the claim is not decided (run >= 2 seeds; 3 for the table).")}
    noise = max(ours["sd"] or 0.0, plain["sd"] or 0.0)
    held = gap > 0 and gap > noise
    third = ours["mean"] <= plain["mean"] / 3 if plain["mean"] > 0 else False
    return {"deeptalk_drop_pct": ours["mean"], "plain_drop_pct": plain["mean"], "gap": gap, "seed_sd": noise,
            "reproduced": held, "within_a_third": third,
            "statement": (f"DeepTalk's text drop ({ours['mean']:.1f} %) is "
                          f"{'smaller' if gap > 0 else 'NOT smaller'} than the plain fine-tune's "
                          f"({plain['mean']:.1f} %); gap {gap:.1f} points vs seed spread (sd) {noise:.1f}: the "
                          f"paper's claim {'reproduces' if held else 'does not reproduce'} here"
                          f"{' (and is within a third of plain)' if third else ''}.")}


def report(cfg: ProjectConfig, seeds: list[int], systems: list[System], units: dict[str, dict[int, dict]],
           references: dict[int, dict], timings: dict[str, Any], wall_s: float) -> dict[str, Any]:
    summary: dict[str, dict] = {}
    for system in systems:
        per_seed = units.get(system.name, {})
        if not per_seed:
            continue
        row: dict[str, Any] = {}
        for label, path, _, se_path in METRICS:
            row[label] = spread([_get(u["metrics"], path) for u in per_seed.values()])
            row[label]["se"] = spread([_get(u["metrics"], se_path) for u in per_seed.values()])["mean"]
        row["train_wall_s"] = spread([u["train_wall_s"] for u in per_seed.values()])
        row["unit_wall_s"] = spread([u["unit_wall_s"] for u in per_seed.values()])
        row["trainable_params"] = next(iter(per_seed.values()))["trainable_params"]
        summary[system.name] = row
    base_qa = spread([r["base"]["text"].get("qa_acc") for r in references.values()])
    return {
        "profile": cfg.profile, "seeds": seeds,
        "command": f"python -m deeptalk compare --profile {cfg.profile} --seeds {','.join(map(str, seeds))}",
        "commit": _commit(), "machine": machine(), "workspace": str(compare_root(cfg)),
        "protocol": ("same S1 checkpoint per seed for every system; same corpus, codec and packed data for all; "
                     "each phase at the budget (steps, batch, lr) of the DeepTalk stage it mirrors"),
        "curve_every": next((u["key"]["curve_every"] for d in units.values() for u in d.values()), None),
        "references": {str(k): v for k, v in references.items()}, "base_qa_acc": base_qa,
        "summary": summary, "matched": matched_quality(units), "claim": claim(summary),
        "units": {name: {str(s): u for s, u in d.items()} for name, d in units.items()},
        "timings": timings, "wall_s": round(wall_s, 1),
    }


def _fmt(stat: dict[str, Any], fmt: str) -> str:
    if stat.get("mean") is None:
        return "—"
    text = fmt.format(stat["mean"])
    if stat.get("sd") is not None:
        text += " ± " + fmt.format(stat["sd"])
    if stat.get("se") is not None:
        text += f" (se {fmt.format(stat['se'])})"
    return text


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [["system", *[m[0] for m in METRICS], "trainable / total params", "train s / seed"]]
    for name, row in result["summary"].items():
        params = row["trainable_params"]
        rows.append([name, *[_fmt(row[m[0]], m[2]) for m in METRICS],
                     f"{params['max']:,} / {params['total_params']:,}", _fmt(row["train_wall_s"], "{:.0f}")])
    return rows


def matched_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [["system", "text drop % at target", "QA acc", "answer ppl", "text ppl", "speech steps to target"]]
    for name, row in result["matched"]["systems"].items():
        rows.append([name, _fmt(row["drop_pct"], "{:.1f}"), _fmt(row["qa_acc"], "{:.3f}"),
                     _fmt(row["answer_ppl"], "{:.2f}"), _fmt(row["ppl"], "{:.1f}"), _fmt(row["steps"], "{:.0f}")])
    return rows


def _md_table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0]), *["| " + " | ".join(r) + " |" for r in rows[1:]]]


def _timing_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"- data chain (once): {result['timings']['data'].get('wall_s', 0):.0f} s"]
    for seed, t in result["timings"]["seeds"].items():
        lines.append(f"- seed {seed}: base + S1 + profiling {t['shared_wall_s']:.0f} s "
                     f"({', '.join(f'{k} {v}' for k, v in t['steps'].items())})")
    for name, row in result["summary"].items():
        units = list(result["units"][name].values())
        parts = {k: statistics.fmean(u.get(k, 0.0) for u in units) for k in ("train_call_s", "curve_eval_s",
                                                                            "final_eval_s", "curve_points")}
        lines.append(f"- {name}: {_fmt(row['unit_wall_s'], '{:.0f}')} s per unit: training {parts['train_call_s']:.0f} s, "
                     f"curve {parts['curve_eval_s']:.0f} s ({parts['curve_points']:.0f} points), final evaluation "
                     f"{parts['final_eval_s']:.0f} s")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    target = result["matched"]["target_asr_wer"]
    lines = [
        f"# DeepTalk comparison ({result['profile']} profile, seeds {', '.join(map(str, result['seeds']))})", "",
        f"Command: `{result['command']}`  ", f"Commit: `{result['commit']}`  ",
        f"Machine: {result['machine']['platform']}, {result['machine']['cpu_count']} CPUs, "
        f"{result['machine']['torch_threads']} torch threads, GPU: {result['machine']['cuda'] or 'none'}  ",
        f"Wall time: {result['wall_s']:.0f} s (workspace `{result['workspace']}`)", "",
        f"Protocol: {result['protocol']}.", "",
        f"**{result['claim']['statement']}**", "",
        "## End of training (mean ± sd over seeds; se = the held-out benchmark's standard error, mean over seeds)",
        "", *_md_table(table_rows(result)), "",
        f"Base held-out text QA: {_fmt(result['base_qa_acc'], '{:.3f}')}.", "",
        "## At matched speech quality",
        "", (f"Target: held-out ASR WER ≤ {target:.3f} (the best WER every unit reaches); each unit's first curve "
             "point at or below it." if target is not None else "No ASR WER on the curves: nothing to match."), "",
        *(_md_table(matched_rows(result)) if target is not None else []), "",
        f"Curve: every {result['curve_every']} steps of each phase (`reports/compare.html`).", "",
        "## Wall time", "", *_timing_lines(result), "",
        "Definitions: text drop % = mean over {held-out typed QA accuracy (when the base answers at least 5), "
        "1/answer perplexity, 1/text perplexity} of (base − model) / base × 100 against the seed's own "
        "text-pretrained base, text-only mode (`deeptalk/evaluation/text_ability.py`). QA drop % is that "
        "mean's QA part alone. Spoken QA: reference contained in the streamed text answer to a held-out spoken "
        "question in a held-out voice. ASR / TTS WER: held-out voices; TTS against the ground-truth sentence.", "",
    ]
    return "\n".join(lines)


# ---- the curve as inline SVG ---------------------------------------------------------------------------------------
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22", "#393b79", "#637939", "#843c39")


def _series(units: dict[int, dict], x_key: str) -> list[tuple[float, float, float, float]]:
    """(mean x, mean drop, min drop, max drop) per curve point index over the seeds that have that point."""
    curves = [u["curve"] for u in units.values()]
    out = []
    for i in range(max((len(c) for c in curves), default=0)):
        pts = [c[i] for c in curves if i < len(c) and c[i][x_key] is not None and c[i]["drop_pct"] is not None]
        if pts:
            ys = [p["drop_pct"] for p in pts]
            out.append((statistics.fmean(p[x_key] for p in pts), statistics.fmean(ys), min(ys), max(ys)))
    return out


def curve_svg(result: dict[str, Any], x_key: str, x_label: str, width: int = 720, height: int = 420) -> str:
    """Text drop (y) against ``x_key`` per system: a line through the seeds' mean, a band from their min to max."""
    series = {name: _series(units, x_key) for name, units in result["units"].items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return "<p>No curve points yet.</p>"
    xs = [p[0] for s in series.values() for p in s]
    ys = [y for s in series.values() for p in s for y in p[1:]]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys + [0.0]), max(ys + [0.0])
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 60, 170, 20, 50

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    e = html.escape
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11' "
             f"font-family='sans-serif'><rect width='{width}' height='{height}' fill='white'/>",
             f"<line x1='{left}' y1='{sy(0):.1f}' x2='{width - right}' y2='{sy(0):.1f}' stroke='#bbb' "
             "stroke-dasharray='4 3'/>"]
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f"<text x='{sx(xv):.1f}' y='{height - bottom + 15}' text-anchor='middle'>{xv:.3g}</text>")
        parts.append(f"<text x='{left - 5}' y='{sy(yv) + 4:.1f}' text-anchor='end'>{yv:.3g}</text>")
    parts.append(f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='black'/>"
                 f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='black'/>")
    parts.append(f"<text x='{(left + width - right) / 2}' y='{height - 12}' text-anchor='middle'>{e(x_label)}</text>"
                 f"<text x='14' y='{(top + height - bottom) / 2}' transform='rotate(-90 14 {(top + height - bottom) / 2})'"
                 " text-anchor='middle'>text drop % (seeds' mean; band: min–max)</text>")
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        band = [f"{sx(x):.1f},{sy(hi):.1f}" for x, _, _, hi in pts] + [
            f"{sx(x):.1f},{sy(lo):.1f}" for x, _, lo, _ in reversed(pts)]
        parts.append(f"<polygon points='{' '.join(band)}' fill='{colour}' fill-opacity='0.15' stroke='none'/>")
        line = " ".join(f"{sx(x):.1f},{sy(m):.1f}" for x, m, _, _ in pts)
        parts.append(f"<polyline points='{line}' fill='none' stroke='{colour}' stroke-width='2'>"
                     f"<title>{e(name)}</title></polyline>")
        parts.extend(f"<circle cx='{sx(x):.1f}' cy='{sy(m):.1f}' r='2.5' fill='{colour}'/>" for x, m, _, _ in pts)
        parts.append(f"<rect x='{width - right + 12}' y='{top + 16 * i}' width='12' height='3' fill='{colour}'/>"
                     f"<text x='{width - right + 28}' y='{top + 16 * i + 5}'>{e(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def render_html(result: dict[str, Any]) -> str:
    """Self-contained page (no scripts, nothing from the network): claim, tables, the two curves."""
    e = html.escape

    def table(rows: list[list[str]]) -> str:
        return "<table>" + "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{e(c)}</{'th' if i == 0 else 'td'}>"
                                                    for c in row) + "</tr>" for i, row in enumerate(rows)) + "</table>"

    target = result["matched"]["target_asr_wer"]
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>DeepTalk comparison</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 8px}"
        "table{border-collapse:collapse}</style></head><body>",
        f"<h1>DeepTalk comparison ({e(result['profile'])}, seeds {e(', '.join(map(str, result['seeds'])))})</h1>",
        f"<p><code>{e(result['command'])}</code> at <code>{e(str(result['commit']))}</code>, "
        f"{result['wall_s']:.0f} s wall. {e(result['protocol'])}.</p>",
        f"<p><b>{e(result['claim']['statement'])}</b></p>",
        "<h2>Retention vs speech quality</h2>",
        curve_svg(result, "asr_wer", "held-out ASR WER (← better speech)"),
        "<h2>Retention over speech training</h2>",
        curve_svg(result, "steps", "speech-training optimizer steps"),
        "<h2>End of training (mean ± sd over seeds, se of the held-out benchmark)</h2>", table(table_rows(result)),
        "<h2>At matched speech quality</h2>",
        (f"<p>Target held-out ASR WER ≤ {target:.3f}.</p>" + table(matched_rows(result))) if target is not None
        else "<p>No ASR WER on the curves.</p>",
        "<h2>Wall time</h2><ul>" + "".join(f"<li>{e(line[2:])}</li>" for line in _timing_lines(result)) + "</ul>",
        "</body></html>",
    ])


def write_reports(cfg: ProjectConfig, result: dict[str, Any]) -> None:
    reports = Path(cfg.paths.reports)
    reports.mkdir(parents=True, exist_ok=True)
    for name, text in (("compare.json", json.dumps(result, indent=1, default=str) + "\n"),
                       ("compare.md", render_markdown(result)), ("compare.html", render_html(result))):
        tmp = reports / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, reports / name)
