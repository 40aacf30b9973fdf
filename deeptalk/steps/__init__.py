"""Pipeline steps: the one registry that `dvc.yaml`, the Prefect flow and the CLI are all built from.

Each step is a module ``deeptalk.steps.<module>`` with ``run(cfg, **args) -> dict``. A ``StepSpec`` names the
data it reads (``deps``), what it writes (``outs``) and the config values it reads (``config`` selectors); its
code is found from its imports. ``deeptalk.steps.record.step_record`` turns that into the step's complete
dependencies, from which ``dvc.yaml`` (``python -m deeptalk dvc-yaml``) and every skip decision derive. The
training steps, their names, outputs and order come from the stage chain (``deeptalk.training.stages.CHAIN``);
``DEFAULT_CHAIN`` is what a default run computes.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deeptalk.console import CONSOLE, step_line
from deeptalk.steps.record import RUNNER
from deeptalk.training.stages import BASELINES as BASELINE_STAGES
from deeptalk.training.stages import BY_NAME as BY_STAGE
from deeptalk.training.stages import CHAIN, PROFILED_FROM, SHARED, SPLIT_FIXED, SPLIT_PROFILED, SPLIT_RANDOM
from deeptalk.training.stages import names as stage_names

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


def _training_steps(first: bool) -> tuple[StepSpec, ...]:
    """One step per stage of the chain (``deeptalk.training.stages.CHAIN``: its order, step name, output, init
    model, split source and budgets come from there), ``profile_experts`` right after the stage it profiles;
    ``first`` gives the steps up to that one, else the rest. The baselines and ablations become baseline steps."""
    steps: list[StepSpec] = []
    for stage in CHAIN:
        if (CHAIN.index(stage) <= CHAIN.index(BY_STAGE[PROFILED_FROM])) != first:
            continue
        if stage.init_from == "new":  # the original LLM: trained from the text corpus, or imported at paper scale
            steps.append(StepSpec(stage.step, stage.step, ("data/sequences", "data/raw/tokenizer", "models/encoder"),
                                  (stage.out,), (*MODEL, *(f"training.{b}" for b in stage.budgets), RUNNER),
                                  heavy=True))
            continue
        splits = {phase.split for phase in stage.phases}
        deps = ("data/sequences", _out(stage.init_from))
        if splits & {SPLIT_PROFILED, SPLIT_RANDOM}:
            deps += ("models/expert_split.json",)
        if SPLIT_FIXED in splits:
            deps += ("reports/profile",)
        extra = ("training.fixed_split",) if SPLIT_FIXED in splits else ()
        extra += ("training.moextend_experts",) if any(p.add_experts for p in stage.phases) else ()
        config = (*MODEL, *(f"training.{b}" for b in stage.budgets), RUNNER, *extra)
        steps.append(StepSpec(stage.step, "train_stage", deps, (stage.out,), config, args={"stage": stage.name},
                              heavy=True, baseline=stage.name in BASELINE_STAGES))
    if first:
        profiled = BY_STAGE[PROFILED_FROM].out
        steps.append(StepSpec(
            "profile_experts", "profile_experts", ("data/sequences", profiled),
            ("models/expert_split.json", "reports/profile"),
            (*MODEL, "training.split_rule", "training.min_speech_fraction", "training.max_speech_fraction",
             "training.profile_batches"),
        ))
    return tuple(steps)


def _out(stage: str) -> str:
    """The directory of ``stage`` (``base`` is the original LLM, the chain's first stage's output)."""
    return CHAIN[0].out if stage == "base" else BY_STAGE[stage].out


STEPS: tuple[StepSpec, ...] = (
    StepSpec("generate_data", "generate_data", (), ("data/raw",), ("data", "audio_input.max_seconds")),
    StepSpec("validate_data", "validate_data", ("data/raw",), ("data/validated",), ("data",), persist=True),
    StepSpec("fit_codec", "fit_codec", ("data/raw", "data/validated"), ("models/codec",),
             ("codec", "data.assistant_voice", "seed")),
    StepSpec("prepare_encoder", "prepare_encoder", (), ("models/encoder",), ("audio_input",)),
    StepSpec("encode", "encode", ("data/raw", "models/codec", "models/encoder"), ("data/processed",),
             ("audio_input", "codec")),
    StepSpec("pack", "pack", ("data/processed", "data/raw"), ("data/sequences",), ("packing", *MODEL)),
    *_training_steps(first=True),
    *_training_steps(first=False),
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
STAGE_STEPS = {"base": CHAIN[0].step, **{stage.name: stage.step for stage in CHAIN}}  # a stage's step by its name
# what `make run`, the flow's default run and `dvc repro` compute, in order: every step but the baselines
DEFAULT_CHAIN = tuple(s.name for s in STEPS if not s.baseline)
DATA_STEPS = DEFAULT_CHAIN[:DEFAULT_CHAIN.index(CHAIN[0].step)]  # before the first training step
SEED_STEPS = (*(STAGE_STEPS[n] for n in stage_names(SHARED)), "profile_experts")  # every system's start per seed


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
