"""The paper's comparison at small scale: ``python -m deeptalk compare --profile small``.

From one shared S1 model (same corpus, codec, text-pretrained base and alignment) it trains

- ``deeptalk``: adaptive expert split (``profile_experts``) → S2a speech experts → S2b text experts → S3 joint;
- the baselines named in ``training.baselines``: ``plain`` (no split, everything trained jointly: the "native
  MLLM" row), ``fixed`` (fixed-N split, the reference's ``audio20``), ``moextend`` (added speech experts),
  ``strict`` (only the expert groups and new embedding rows ever train; STACK.md),

evaluates each with the same held-out items and code as the ``evaluate`` step (text-ability drop vs the
base LLM, spoken QA s→t and s→s, ASR WER, TTS WER, plus trainable parameters and training wall time), and writes
``reports/compare.json``, ``reports/compare.md`` and ``reports/compare.html`` (expert-load heatmaps per
system, for the analysis). The paper's expectation is ``drop(deeptalk) < drop(plain)``; the result says
whether it held, whatever it is.

Everything is built in its own workspace, ``artifacts/compare/<profile>/``, so a comparison never overwrites
the main pipeline's data or the model that was packaged. A re-run reuses every step whose settings and code
are unchanged (prerequisite steps by a chained fingerprint, training stages by the runner's own fingerprint,
evaluations by the trained model's fingerprint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deeptalk.evaluation.report import expert_load_plot, loss_curve_plot
from deeptalk.evaluation.training_logs import find_stage_logs, loss_records, mean_expert_load, read_records

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

PREREQUISITES = ("generate_data", "validate_data", "fit_codec", "encode", "pack", "text_pretrain", "align",
                 "profile_experts")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where the deeptalk/ code deps live


@dataclass(frozen=True)
class System:
    name: str
    stages: tuple[str, ...]  # stage plans trained in order (runner names)

    @property
    def model_stage(self) -> str:
        return self.stages[-1]


def systems_for(cfg: ProjectConfig) -> list[System]:
    """DeepTalk's own chain first, then the configured baselines (each one stage plan)."""
    return [System("deeptalk", ("s2a", "s2b", "s3"))] + [System(b, (b,)) for b in cfg.training.baselines]


def workspace(cfg: ProjectConfig) -> ProjectConfig:
    """``cfg`` with every path under ``artifacts/compare/<profile>``."""
    from deeptalk.config import Paths

    root = Path(cfg.paths.root) / "artifacts" / "compare" / cfg.profile
    root.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(cfg, paths=Paths(root))


# ---- prerequisites ------------------------------------------------------------------------------------------
def _hash_code(digest: Any, rel: str) -> None:
    path = PACKAGE_ROOT / rel
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.py")) if path.is_dir() else []
    for f in files:
        digest.update(str(f.relative_to(PACKAGE_ROOT)).encode())
        digest.update(f.read_bytes())


def step_fingerprint(step: Any, cfg: ProjectConfig, previous: str) -> str:
    """Settings + code of a step, chained with the previous step's fingerprint (its inputs come from there)."""
    digest = hashlib.sha256(previous.encode())
    params = {}
    for name in step.params:
        value = getattr(cfg, "evaluation" if name == "gates" else name)
        params[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    digest.update(json.dumps({"step": step.name, "args": step.args, "profile": cfg.profile, "params": params},
                             sort_keys=True, default=str).encode())
    for dep in step.deps:
        if dep.startswith("deeptalk/"):
            _hash_code(digest, dep)
    return digest.hexdigest()[:32]


def run_prerequisites(cfg: ProjectConfig) -> dict[str, str]:
    """Run corpus → … → profile_experts in the workspace, skipping steps whose fingerprint and outputs match."""
    from deeptalk.steps import get_step

    stamps = Path(cfg.paths.root) / ".stamps"
    stamps.mkdir(exist_ok=True)
    previous, done = "", {}
    for name in PREREQUISITES:
        step = get_step(name)
        fp = step_fingerprint(step, cfg, previous)
        stamp = stamps / f"{name}.txt"
        outs_present = all((Path(cfg.paths.root) / out).exists() for out in step.outs)
        if outs_present and stamp.is_file() and stamp.read_text() == fp:
            log.info("compare: %s up to date", name)
            done[name] = "cached"
        else:
            stamp.unlink(missing_ok=True)
            step.run(cfg)
            stamp.write_text(fp)
            done[name] = "ran"
        previous = fp
    return done


# ---- per-system facts -------------------------------------------------------------------------------------
def _summary(cfg: ProjectConfig, stage: str) -> dict[str, Any]:
    path = cfg.paths.stage(stage) / "train_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def phase_summaries(cfg: ProjectConfig, system: System) -> dict[str, dict]:
    """``train_summary.json`` of every phase of the system's stage plans."""
    from deeptalk.training.runner import phase_dir
    from deeptalk.training.stages import get_plan

    out = {}
    for stage in system.stages:
        plan = get_plan(stage, cfg.training)
        for spec in plan.phases:
            path = phase_dir(cfg, plan, spec) / "train_summary.json"
            out[spec.name] = json.loads(path.read_text()) if path.is_file() else {}
    return out


def trainable_parameters(cfg: ProjectConfig, system: System) -> dict[str, int]:
    """Parameters each phase may change (``count_trainable`` after the stage spec is applied; frozen expert
    rows of fused tensors are not counted), plus the model's total."""
    from deeptalk.data.packing import load_layout
    from deeptalk.model.freezing import count_trainable
    from deeptalk.training.stages import get_plan
    from deeptalk.training.runner import prepare_model

    layout = load_layout(cfg.paths.sequences)
    counts: dict[str, int] = {}
    total = 0
    for stage in system.stages:
        plan = get_plan(stage, cfg.training)
        for spec in plan.phases:
            model, _ = prepare_model(spec, plan, cfg, layout)
            counts[spec.name] = count_trainable(model)
            total = sum(p.numel() for p in model.parameters())
            del model
    return {"by_phase": counts, "max": max(counts.values()), "total_params": total}


def _eval_key(cfg: ProjectConfig, system: System) -> str:
    code = hashlib.sha256()
    for rel in ("deeptalk/evaluation", "deeptalk/inference"):
        _hash_code(code, rel)
    blob = json.dumps({"code": code.hexdigest(),"train": [_summary(cfg, s).get("fingerprint") for s in system.stages],
                       "phases": {k: v.get("fingerprint") for k, v in phase_summaries(cfg, system).items()},
                       "eval": dataclasses.asdict(cfg.evaluation), "seed": cfg.seed, "service": repr(cfg.service)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def evaluate_system(cfg: ProjectConfig, system: System, shared: dict[str, Any]) -> dict[str, Any]:
    """Metrics of the system's final model (cached in the workspace by the trained model's fingerprint)."""
    from deeptalk.evaluation.suite import evaluate_model

    cache = Path(cfg.paths.root) / "eval" / f"{system.name}.json"
    key = _eval_key(cfg, system)
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            log.info("compare: %s evaluation up to date", system.name)
            return data["metrics"]
    result = evaluate_model(cfg, cfg.paths.stage(system.model_stage), held=shared["held"], base=shared["base"],
                            scorer=shared["scorer"], latency=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "metrics": result.metrics}, indent=1, default=str))
    return result.metrics


# ---- the command ------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def claim(systems: dict[str, dict]) -> dict[str, Any]:
    """The paper's expectation: DeepTalk's text-ability drop is smaller than the plain fine-tune's."""
    ours = systems.get("deeptalk", {}).get("metrics", {}).get("text", {}).get("drop_pct")
    plain = systems.get("plain", {}).get("metrics", {}).get("text", {}).get("drop_pct")
    if ours is None or plain is None:
        return {"deeptalk_drop_pct": ours, "plain_drop_pct": plain, "reproduced": None,
                "statement": "not decidable: a drop is missing (no plain baseline, or a zero base score)"}
    held = ours < plain
    return {"deeptalk_drop_pct": ours, "plain_drop_pct": plain, "reproduced": held,
            "statement": (f"DeepTalk's text-ability drop ({ours:.1f} %) is {'smaller' if held else 'NOT smaller'} "
                          f"than the plain fine-tune's ({plain:.1f} %): the paper's claim "
                          f"{'reproduces' if held else 'does not reproduce'} here.")}


def run_compare(cfg: ProjectConfig) -> dict[str, Any]:
    """Train and evaluate every system, write ``reports/compare.{json,md,html}``; returns the JSON dict."""
    from deeptalk.evaluation.asr_scorer import scorer_for
    from deeptalk.evaluation.heldout import heldout_for
    from deeptalk.evaluation.suite import base_text_ability, text_ability_of, text_metrics
    from deeptalk.evaluation.text_ability import load_tokenizer
    from deeptalk.training.runner import run_stage

    start = time.perf_counter()
    reports = Path(cfg.paths.reports)
    work = workspace(cfg)
    log.info("compare (%s): workspace %s", cfg.profile, work.paths.root)
    prereq = run_prerequisites(work)
    systems = systems_for(work)

    trained: dict[str, dict] = {}
    for system in systems:
        t0 = time.perf_counter()
        for stage in system.stages:
            run_stage(stage, work)
        phases = phase_summaries(work, system)
        trained[system.name] = {
            "stages": list(system.stages),
            "train_wall_s": round(sum(p.get("wall_s", 0.0) for p in phases.values()), 1),
            "command_wall_s": round(time.perf_counter() - t0, 1),
            "phases": {k: {f: v.get(f) for f in ("steps", "wall_s", "tokens_per_s", "peak_rss_mb")}
                       for k, v in phases.items()},
            "trainable_params": trainable_parameters(work, system),
        }

    held = heldout_for(work)
    tokenizer = load_tokenizer(work)
    base = base_text_ability(work, held, tokenizer)
    shared = {"held": held, "base": base, "scorer": scorer_for(work)}
    min_correct = work.evaluation.min_base_qa_correct
    reference = {
        "base": {"text": text_metrics(base, base, min_correct)},
        "s1": {"text": text_metrics(base, text_ability_of(work.paths.stage("s1"), work, held, tokenizer),
                                    min_correct)},
    }
    for system in systems:
        trained[system.name]["metrics"] = evaluate_system(work, system, shared)

    result = {
        "profile": cfg.profile,
        "command": f"python -m deeptalk compare --profile {cfg.profile}",
        "machine": machine(),
        "workspace": str(work.paths.root),
        "prerequisites": prereq,
        "shared_training": {s: {k: _summary(work, s).get(k) for k in ("steps", "wall_s")} for s in ("s1",)},
        "reference": reference,
        "expert_split": _split_summary(work),
        "systems": trained,
        "claim": claim(trained),
        "min_base_qa_correct": min_correct,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "compare.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (reports / "compare.md").write_text(render_markdown(result))
    (reports / "compare.html").write_text(render_html(result, work))
    log.info("compare: %s", result["claim"]["statement"])
    return result


def _split_summary(work: ProjectConfig) -> dict[str, Any]:
    """The profiled (adaptive) split DeepTalk trained with, and the other rules' splits, for the analysis."""
    from deeptalk.model.experts import ExpertSplit
    from deeptalk.training.runner import profile_dir

    out: dict[str, Any] = {"rule": work.training.split_rule}
    if Path(work.paths.expert_split).is_file():
        speech = ExpertSplit.from_json(work.paths.expert_split).speech
        out["speech_experts"] = [list(layer) for layer in speech]
        out["speech_experts_per_layer"] = [len(layer) for layer in speech]
    splits = profile_dir(work) / "splits.json"
    if splits.is_file():
        out["all_rules"] = json.loads(splits.read_text())
    return out


# ---- rendering ------------------------------------------------------------------------------------------------
COLUMNS = (
    ("text drop %", ("text", "drop_pct"), "{:.1f}"),
    ("text QA acc", ("text", "qa_acc"), "{:.3f}"),
    ("answer ppl", ("text", "answer_ppl"), "{:.2f}"),
    ("text ppl", ("text", "ppl"), "{:.2f}"),
    ("spoken QA s→t", ("spoken_qa", "s2t_acc"), "{:.3f}"),
    ("spoken / typed QA", ("spoken_qa", "s2t_over_typed"), "{:.2f}"),
    ("distinct answers", ("spoken_qa", "distinct_answers"), "{:.0f}"),
    ("spoken QA s→s", ("spoken_qa", "s2s_acc"), "{:.3f}"),
    ("answer speech WER (own text)", ("spoken_qa", "speech_wer_own_text"), "{:.3f}"),
    ("ASR WER", ("asr", "wer"), "{:.3f}"),
    ("TTS WER (truth)", ("tts", "wer_vs_truth"), "{:.3f}"),
    ("TTS WER (own text)", ("tts", "wer_vs_generated_text"), "{:.3f}"),
)


def _cell(metrics: dict, path: tuple[str, str], fmt: str) -> str:
    value = metrics.get(path[0], {}).get(path[1])
    return "—" if value is None else fmt.format(value)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Header + one row per reference model and system (the Markdown and HTML tables)."""
    rows = [["system", *[c[0] for c in COLUMNS], "trainable params", "train wall s"]]
    for name, ref in result["reference"].items():
        rows.append([f"({name})", *[_cell(ref, c[1], c[2]) for c in COLUMNS], "—", "—"])
    for name, sys_ in result["systems"].items():
        params = sys_["trainable_params"]
        rows.append([name, *[_cell(sys_["metrics"], c[1], c[2]) for c in COLUMNS],
                     f"{params['max']:,} / {params['total_params']:,}", f"{sys_['train_wall_s']:.0f}"])
    return rows


def render_markdown(result: dict[str, Any]) -> str:
    rows = table_rows(result)
    lines = [
        f"# DeepTalk comparison ({result['profile']} profile)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['platform']}, {result['machine']['cpu_count']} CPUs, "
        f"{result['machine']['torch_threads']} torch threads, GPU: {result['machine']['cuda'] or 'none'}  ",
        f"Total wall time: {result['wall_s']:.0f} s (workspace `{result['workspace']}`)",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *["| " + " | ".join(r) + " |" for r in rows[1:]],
        "",
        f"**{result['claim']['statement']}**",
        "",
        f"Expert split ({result.get('expert_split', {}).get('rule', '?')}): speech experts per MoE layer "
        f"{result.get('expert_split', {}).get('speech_experts_per_layer', '—')}.",
        "",
        "Definitions: text drop % = mean over {held-out text-QA accuracy (only when the base answers at least "
        f"{result.get('min_base_qa_correct', 5)} questions), 1/answer perplexity, 1/text perplexity}} "
        "of (base − model) / base "
        "× 100 against the text-pretrained base LLM, text-only mode, QA decoding greedy and restricted to the "
        "text vocabulary + EOT. Spoken QA: reference answer contained in the streamed text (s→t) or in the "
        "Whisper tiny.en transcript of the streamed audio (s→s). TTS WER against the ground-truth sentence and "
        "against the model's own generated text. Trainable params: the most any phase trains / model total. "
        "Train wall s: the system's own phases (the shared text pretraining and S1 are not counted). "
        "(base) and (s1) rows are the starting points every system shares.",
        "",
    ]
    return "\n".join(lines)


def render_html(result: dict[str, Any], work: ProjectConfig) -> str:
    """Self-contained page: the table, then loss curves and expert-load heatmaps of every trained phase."""
    rows = table_rows(result)
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>DeepTalk comparison</title>"
             "<style>body{font-family:system-ui,sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 8px}"
             "table{border-collapse:collapse}img{max-width:100%}</style></head><body>",
             f"<h1>DeepTalk comparison ({e(result['profile'])})</h1><p><b>{e(result['claim']['statement'])}</b></p>",
             "<table>" + "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{e(c)}</{'th' if i == 0 else 'td'}>"
                                                  for c in row) + "</tr>" for i, row in enumerate(rows)) + "</table>"]
    for stage, path in find_stage_logs(Path(work.paths.root) / "models").items():
        records = read_records(path)
        parts.append(f"<h2>{e(stage)}</h2>")
        curve = loss_curve_plot(stage, loss_records(records))
        if curve:
            parts.append(f"<img alt='{e(stage)} loss' src='{curve}'>")
        loads = mean_expert_load(records)
        if loads:
            parts.append(f"<img alt='{e(stage)} expert load' src='{expert_load_plot(stage, loads)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
