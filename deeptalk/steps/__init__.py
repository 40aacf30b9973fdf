"""Pipeline steps: the one registry that `dvc.yaml`, the Prefect flow and the CLI are all built from.

Each step is a module ``deeptalk.steps.<module>`` with ``run(cfg, **args) -> dict``. A ``StepSpec`` names
what the step reads (``deps``), writes (``outs``) and which ``params.yaml`` sections it depends on, so that
``dvc.yaml`` is generated from here (``python -m deeptalk dvc-yaml``) and the Prefect cache key hashes exactly
the same inputs DVC does.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deeptalk.console import CONSOLE, step_line
from deeptalk.training.config import ABLATIONS, BASELINES

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

CODE_DEPS = ("deeptalk/tokens.py", "deeptalk/config.py")  # every step depends on the layout and config code


@dataclass(frozen=True)
class StepSpec:
    name: str  # unique; the DVC stage name and the Prefect task name
    module: str  # deeptalk.steps.<module>
    deps: tuple[str, ...]  # files/dirs read (relative to the project root)
    outs: tuple[str, ...]  # files/dirs written
    params: tuple[str, ...]  # params.yaml sections (or section.key) it depends on
    args: dict = field(default_factory=dict)  # extra keyword arguments for run()
    metrics: tuple[str, ...] = ()  # outs that are DVC metrics (not cached)
    plots: tuple[str, ...] = ()  # outs that are DVC plots
    heavy: bool = False  # training: may be sent to a GPU work pool
    persist: bool = False  # DVC keeps outs in place while the step runs (a failed validation loses nothing)

    def run(self, cfg: ProjectConfig) -> dict:
        module = importlib.import_module(f"deeptalk.steps.{self.module}")
        start = time.perf_counter()
        log.info("step %s: start (profile %s)", self.name, cfg.profile)
        summary = module.run(cfg, **self.args) or {}
        summary = {**summary, "step": self.name, "wall_s": round(time.perf_counter() - start, 2)}
        log.info("%s", step_line(self.name, summary["wall_s"], summary), extra=CONSOLE)
        return summary


def _data_code(*modules: str) -> tuple[str, ...]:
    return tuple(f"deeptalk/data/{m}.py" for m in ("schema", *modules))


def _stage(name: str, init: str, needs_split: bool = False, extra_deps: tuple[str, ...] = ()) -> StepSpec:
    deps = ("deeptalk/model", "deeptalk/training", "data/sequences", f"models/stages/{init}") + extra_deps
    if needs_split:
        deps += ("models/expert_split.json",)
    return StepSpec(
        name=f"train_{name}",
        module="train_stage",
        deps=deps,
        outs=(f"models/stages/{name}",),
        params=("model", "training", "seed"),
        args={"stage": name},
        heavy=True,
    )


TRAINED = ("base", "s1", "s2a", "s2b", "s3", *BASELINES)

STEPS: tuple[StepSpec, ...] = (
    StepSpec("generate_data", "generate_data", ("deeptalk/data",), ("data/raw",), ("data", "seed")),
    StepSpec(
        "validate_data", "validate_data", ("deeptalk/data/validation.py", "data/raw"),
        ("data/validated",), ("data",), persist=True,
    ),
    StepSpec("fit_codec", "fit_codec", ("deeptalk/codec", "data/raw", "data/validated"), ("models/codec",),
             ("codec", "seed")),
    StepSpec("prepare_encoder", "prepare_encoder", ("deeptalk/model/whisper_convert.py",), ("models/encoder",),
             ("audio_input",)),
    StepSpec("encode", "encode", _data_code("features", "processed", "audio_io", "validation", "alignment",
                                            "text_tokenizer") + (
        "deeptalk/codec", "deeptalk/evaluation/asr_scorer.py", "data/raw", "models/codec",
        "models/encoder"), ("data/processed",), ("audio_input", "codec")),
    StepSpec("pack", "pack", _data_code("packing", "dataset", "processed", "text_tokenizer", "alignment") + (
        "data/processed", "data/raw"), ("data/sequences",), ("profile", "data", "audio_input", "seed")),
    StepSpec("text_pretrain", "text_pretrain", ("deeptalk/model", "deeptalk/training", "deeptalk/evaluation/text_ability.py",
             "data/sequences", "data/raw/tokenizer", "models/encoder"), ("models/base",),
             ("model", "training", "seed"), heavy=True),
    StepSpec("align", "align", ("deeptalk/model", "deeptalk/training", "data/sequences", "models/base"),
             ("models/stages/s1",), ("model", "training", "audio_input", "seed"), heavy=True),
    StepSpec("profile_experts", "profile_experts", ("deeptalk/profiling.py", "data/sequences", "models/stages/s1"),
             ("models/expert_split.json", "reports/profile"), ("training",)),
    _stage("s2a", "s1", needs_split=True),
    _stage("s2b", "s2a", needs_split=True),
    _stage("s3", "s2b", needs_split=True),
    _stage("plain", "s1"),
    _stage("fixed", "s1", extra_deps=("reports/profile",)),
    _stage("moextend", "s1"),
    _stage("strict", "s1", needs_split=True),
    _stage("random", "s1", needs_split=True),  # draws as many speech experts per layer as the profiled split
    _stage("plain-staged", "s1"),
    *(_stage(name, "s1", needs_split=True) for name in ABLATIONS),
    StepSpec(
        "evaluate", "evaluate",
        ("deeptalk/evaluation", "deeptalk/inference", "data/sequences", "data/raw", "models/base", "models/codec",
         "models/stages/s3"),
        ("reports/index.html", "reports/gate.json"), ("evaluation", "gates"),
        metrics=("reports/metrics.json",),
    ),
    StepSpec("package", "package", ("models/stages/s3", "models/codec", "data/raw/tokenizer", "reports/gate.json"),
             ("reports/package.json",), ("service",)),
)

BY_NAME = {step.name: step for step in STEPS}
# trained stages by the names the stage plans use (``base`` and ``s1`` are text_pretrain and align)
STAGE_STEPS = {"base": "text_pretrain", "s1": "align", **{s.args["stage"]: s.name for s in STEPS if "stage" in s.args}}


def find_step(name: str, stage: str | None = None) -> StepSpec:
    """A step by its name (``train_s2a``), its stage (``s2a``; ``base`` and ``s1`` are ``text_pretrain`` and
    ``align``) or its module with ``stage`` (``train_stage`` + ``s2a``, as ``dvc.yaml`` calls it)."""
    if stage is None and name in BY_NAME:
        return BY_NAME[name]
    if stage is None and name in STAGE_STEPS:
        return BY_NAME[STAGE_STEPS[name]]
    matches = [s for s in STEPS if s.module == name and s.args.get("stage") == stage]
    if not matches:
        raise ValueError(f"unknown step {name!r}" + (f" with stage {stage!r}" if stage else "")
                         + f"; steps: {', '.join(BY_NAME)}; stages: {', '.join(STAGE_STEPS)}")
    return matches[0]


def get_step(name: str) -> StepSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown step {name!r}; steps: {', '.join(BY_NAME)}") from None
