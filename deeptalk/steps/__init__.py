"""Pipeline steps: the one registry that `dvc.yaml`, the Prefect flow and the CLI are all built from.

Each step is a module ``deeptalk.steps.<module>`` with ``run(cfg, **args) -> dict``. A ``StepSpec`` names the
data it reads (``deps``), what it writes (``outs``) and the config values it reads (``config`` selectors); its
code is found from its imports. ``deeptalk.steps.record.step_record`` turns that into the step's complete
dependencies, from which ``dvc.yaml`` (``python -m deeptalk dvc-yaml``) and every skip decision derive. The
training steps and their order come from the stage plans (``deeptalk.training.stages``); ``DEFAULT_CHAIN`` is
what a default run computes.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deeptalk.console import CONSOLE, step_line
from deeptalk.steps.record import RUNNER
from deeptalk.training.config import ABLATIONS, BASELINES

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class StepSpec:
    name: str  # unique; the DVC stage name and the Prefect task name
    module: str  # deeptalk.steps.<module>
    deps: tuple[str, ...]  # data files/dirs read (relative to the project root); code is found from imports
    outs: tuple[str, ...]  # files/dirs written
    config: tuple[str, ...]  # config values read: section, section.key or training:runner (deeptalk.steps.record)
    args: dict = field(default_factory=dict)  # extra keyword arguments for run()
    metrics: tuple[str, ...] = ()  # outs that are DVC metrics (not cached)
    plots: tuple[str, ...] = ()  # outs that are DVC plots
    heavy: bool = False  # training: may be sent to a GPU work pool
    persist: bool = False  # DVC keeps outs in place while the step runs (a failed validation loses nothing)
    baseline: bool = False  # trained only when asked (``dvc repro baselines/dvc.yaml``, flow ``baselines``)
    judges_model: bool = False  # reads the evaluated model, models/stages/<evaluation.stage>, not a fixed stage

    @property
    def params(self) -> tuple[str, ...]:
        """The config sections the step reads (top level of its selectors)."""
        return tuple(dict.fromkeys(sel.partition(".")[0].partition(":")[0] for sel in self.config))

    def data_deps(self, cfg: ProjectConfig) -> tuple[str, ...]:
        """``deps`` with the evaluated model's directory where the step reads it."""
        if not self.judges_model:
            return self.deps
        model = str(cfg.paths.stage(cfg.evaluation.stage).relative_to(cfg.paths.root))
        return tuple(model if d == EVALUATED else d for d in self.deps)

    def run(self, cfg: ProjectConfig) -> dict:
        module = importlib.import_module(f"deeptalk.steps.{self.module}")
        start = time.perf_counter()
        log.info("step %s: start (profile %s)", self.name, cfg.profile)
        summary = module.run(cfg, **self.args) or {}
        summary = {**summary, "step": self.name, "wall_s": round(time.perf_counter() - start, 2)}
        log.info("%s", step_line(self.name, summary["wall_s"], summary), extra=CONSOLE)
        return summary


EVALUATED = "models/stages/s3"  # placeholder in deps of judges_model steps: the default evaluation.stage
MODEL = ("model", "audio_input", "seed")  # what building or loading the speech LM reads


def _stage_dir(stage: str) -> str:
    return "models/base" if stage in ("base", "text_pretrain") else f"models/stages/{stage}"


def _training_steps() -> tuple[StepSpec, ...]:
    """One step per stage plan of ``deeptalk.training.stages`` (the chain's order, each stage's init model, split
    source and budgets come from there), with ``profile_experts`` right after ``align``, whose S1 model it
    profiles; the plans that are ``training.config.BASELINES`` become baseline steps."""
    from deeptalk.training.config import BASELINES as TRAINING_BASELINES
    from deeptalk.training.config import TrainingConfig
    from deeptalk.training.stages import SPLIT_FIXED, SPLIT_PROFILED, SPLIT_RANDOM, stage_plans

    steps: list[StepSpec] = []
    for name, plan in stage_plans(TrainingConfig.for_profile("tiny")).items():  # the plans' shape, any profile
        splits = {phase.split for phase in plan.phases}
        budgets = tuple(f"training.{b}" for b in dict.fromkeys(phase.budget for phase in plan.phases))
        deps = ("data/sequences", _stage_dir(plan.init_from))
        if splits & {SPLIT_PROFILED, SPLIT_RANDOM}:
            deps += ("models/expert_split.json",)
        if SPLIT_FIXED in splits:
            deps += ("reports/profile",)
        extra = {"fixed": ("training.fixed_split",), "moextend": ("training.moextend_experts",)}.get(name, ())
        config = (*MODEL, *budgets, RUNNER, *extra)
        if name == "text_pretrain":
            steps.append(StepSpec("text_pretrain", "text_pretrain", ("data/sequences", "data/raw/tokenizer",
                                  "models/encoder"), ("models/base",), config, heavy=True))
            continue
        if name == "s1":
            steps.append(StepSpec("align", "align", deps, ("models/stages/s1",), config, heavy=True))
            steps.append(StepSpec(
                "profile_experts", "profile_experts", ("data/sequences", "models/stages/s1"),
                ("models/expert_split.json", "reports/profile"),
                (*MODEL, "training.split_rule", "training.min_speech_fraction", "training.max_speech_fraction",
                 "training.profile_batches"),
            ))
            continue
        steps.append(StepSpec(f"train_{name}", "train_stage", deps, (_stage_dir(name),), config,
                              args={"stage": name}, heavy=True, baseline=name in TRAINING_BASELINES))
    return tuple(steps)



STEPS: tuple[StepSpec, ...] = (
    StepSpec("generate_data", "generate_data", (), ("data/raw",), ("data", "audio_input.max_seconds")),
    StepSpec("validate_data", "validate_data", ("data/raw",), ("data/validated",), ("data",), persist=True),
    StepSpec("fit_codec", "fit_codec", ("data/raw", "data/validated"), ("models/codec",),
             ("codec", "data.assistant_voice", "seed")),
    StepSpec("prepare_encoder", "prepare_encoder", (), ("models/encoder",), ("audio_input",)),
    StepSpec("encode", "encode", ("data/raw", "models/codec", "models/encoder"), ("data/processed",),
             ("audio_input", "codec")),
    StepSpec("pack", "pack", ("data/processed", "data/raw"), ("data/sequences",), ("packing", *MODEL)),
    *_training_steps(),
    StepSpec(
        "evaluate", "evaluate",
        ("data/sequences", "data/raw", "models/base", "models/codec", "models/encoder", EVALUATED),
        ("reports/index.html", "reports/gate.json"),
        ("profile", "evaluation", "service", "codec", *MODEL),
        metrics=("reports/metrics.json",), judges_model=True,
    ),
    StepSpec("package", "package", (EVALUATED, "models/codec", "data/raw/tokenizer", "reports/gate.json",
                                    "reports/metrics.json"),
             ("reports/package.json",), ("profile", "service", "evaluation.stage"), judges_model=True),
)

BY_NAME = {step.name: step for step in STEPS}
# every trained model by stage name, in chain order (``base`` is text_pretrain's output)
TRAINED = tuple("base" if s.name == "text_pretrain" else s.outs[0].rpartition("/")[2] for s in STEPS if s.heavy)
# trained stages by the names the stage plans use (``base`` and ``s1`` are text_pretrain and align)
STAGE_STEPS = {"base": "text_pretrain", "s1": "align", **{s.args["stage"]: s.name for s in STEPS if "stage" in s.args}}
BASELINES = tuple(s.args["stage"] for s in STEPS if s.baseline)
# what `make run`, the flow's default run and `dvc repro` compute, in order: every step but the baselines
DEFAULT_CHAIN = tuple(s.name for s in STEPS if not s.baseline)


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
