"""The one runner: executes any stage plan (DeepTalk stages and baselines) on the speech LM.

For each phase of a plan it loads the init weights, resolves the expert split, sets the routing mode and the
trainable groups (``deeptalk.model.freezing.apply_trainable``, the one freezing function), builds the data mix
and hands everything to the DeepSpeed loop (``deeptalk.training.loop``). Stage choices live in the spec and
are applied here on every run; a saved model carries only its architecture, layout and split.

Launch: in-process (``run_stage``, what ``python -m deeptalk step train_stage --stage s2a`` calls) or, for
several GPUs, ``deepspeed --num_gpus N --module deeptalk.training --stage s2a`` (``--local_rank`` is accepted).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from deeptalk.batch import SpeechBatch
from deeptalk.identity import code_digests, json_digest, tree_digest
from deeptalk.tokens import TokenLayout
from deeptalk.model.experts import ExpertSplit
from deeptalk.model.switches import RoutingMode
from deeptalk.profiling import ExpertLoad, modality_masks
from deeptalk.training import distributed
from deeptalk.training.loop import LoopConfig, StepResult, train, zero_stage_of
from deeptalk.training.stages import (
    SPLIT_ADDED,
    SPLIT_FIXED,
    SPLIT_INHERIT,
    SPLIT_NONE,
    SPLIT_PROFILED,
    SPLIT_RANDOM,
    DataMix,
    Stage,
    PhaseSpec,
    get_stage,
)

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig
    from deeptalk.data.dataset import SequenceDataset
    from deeptalk.model.speech_lm import SpeechLM

log = logging.getLogger(__name__)

SUMMARY_FILE = "train_summary.json"


# ---- where things are ------------------------------------------------------------------------------------
def phase_dir(cfg: ProjectConfig, plan: Stage, spec: PhaseSpec) -> Path:
    """Output of a phase: the stage directory for its last phase, ``<stage>/phases/<sub>`` before that."""
    if spec is plan.phases[-1]:
        return cfg.paths.base if plan.name == "text_pretrain" else cfg.paths.stage(plan.name)
    return cfg.paths.stage(plan.name) / "phases" / spec.name.split("/")[-1]


def checkpoint_dir(cfg: ProjectConfig, spec: PhaseSpec) -> Path:
    """Resumable checkpoints live outside the DVC outputs (``dvc repro`` clears outputs before a run)."""
    return cfg.paths.root / "models" / "checkpoints" / spec.name


def snapshot_dir(cfg: ProjectConfig, spec: PhaseSpec) -> Path:
    """Weights every ``training.curve_every`` steps (``step000040/``), outside the DVC outputs: compare's curve."""
    return cfg.paths.root / "models" / "snapshots" / spec.name


def profile_dir(cfg: ProjectConfig) -> Path:
    return cfg.paths.reports / "profile"


def init_dir(cfg: ProjectConfig, plan: Stage, spec: PhaseSpec) -> Path | None:
    if spec.init_from == "new":
        return None
    if spec.init_from == "base":
        return cfg.paths.base
    for phase in plan.phases:
        if phase.name == spec.init_from:
            return phase_dir(cfg, plan, phase)
    return cfg.paths.stage(spec.init_from)


# ---- data ------------------------------------------------------------------------------------------------
class MixedBatches:
    """Batch of step i = ``batch_size`` draws (task by weight, then a sample of that task, with replacement)
    from a generator seeded by ``(seed, i)``: a pure function of the step, so resuming needs only the step."""

    def __init__(self, dataset: SequenceDataset, mix: DataMix, batch_size: int, seed: int) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.tasks = list(mix.tasks)
        self.by_task = {t: [i for i, task in enumerate(dataset.task_of) if task == t] for t in self.tasks}
        empty = [t for t, idx in self.by_task.items() if not idx]
        if empty:
            raise ValueError(f"no training samples for task(s) {empty}")
        weights = np.array([w for _, w in mix.weights], dtype=np.float64)
        self.p = weights / weights.sum()

    def indices(self, step: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, step])
        epoch = step * self.batch_size // max(1, len(self.dataset))  # re-draws the packing choices per epoch
        picks = rng.choice(len(self.tasks), size=self.batch_size, p=self.p)
        out = []
        for t in picks:
            pool = self.by_task[self.tasks[t]]
            out.append((epoch, pool[int(rng.integers(len(pool)))]))
        return out

    def __call__(self, step: int) -> SpeechBatch:
        return self.dataset.collate([self.dataset[key] for key in self.indices(step)])


# ---- the speech-LM side of the loop ----------------------------------------------------------------------
class SpeechProgram:
    """Forward + loss of the speech LM, expert-load bookkeeping per modality, HF-style export."""

    def __init__(self, model: SpeechLM, batches: Callable[[int], SpeechBatch], device: torch.device,
                 text_only: bool = False, align_only: bool = False) -> None:
        self.model, self.batches, self.device, self.text_only = model, batches, device, text_only
        self.align_only = align_only and model.hears_text  # CTC on the head; the LM does not run
        layers = model.moe_layers()
        self.layer_ids = [moe.layer_idx for moe in layers]
        self.load = ExpertLoad(len(layers), layers[0].num_experts, int(model.backbone.config.num_experts_per_tok))

    def batch(self, step: int) -> SpeechBatch:
        return self.batches(step)

    def forward(self, module: nn.Module, batch: SpeechBatch) -> StepResult:
        batch = batch.to(self.device)
        if self.align_only:
            out = module(batch, align_only=True)
            return StepResult(loss=out.loss, stream_losses={k: float(v) for k, v in out.stream_losses.items()},
                              tokens=int(batch.audio.lengths().sum()))
        with self.model.record_routing() as recorder:
            out = module(batch, logits="none", text_only=self.text_only)  # losses only: no full-vocab logits
        masks = dict(zip(("speech", "text"), modality_masks(
            batch.input_ids, batch.labels, batch.attention_mask, self.model.layout)))
        self.load.add_positions(masks)
        for i, layer_idx in enumerate(self.layer_ids):
            self.load.add_layer(i, recorder.indices(layer_idx), recorder.probs(layer_idx), masks)
        streams = {k: float(v.detach()) for k, v in out.stream_losses.items()}
        return StepResult(loss=out.loss, stream_losses=streams, tokens=int(batch.attention_mask.sum()))

    def interval_metrics(self) -> dict[str, Any]:
        summary = {"expert_load": self.load.summary()}
        self.load.reset()
        return summary

    def export(self, module: nn.Module, out_dir: Path) -> None:
        self.model.save_pretrained(out_dir)


# ---- phases ----------------------------------------------------------------------------------------------
def resolve_split(spec: PhaseSpec, cfg: ProjectConfig, model: SpeechLM) -> ExpertSplit | None:
    if spec.split == SPLIT_NONE:
        return None
    if spec.split == SPLIT_PROFILED:
        return ExpertSplit.from_json(cfg.paths.expert_split)
    if spec.split == SPLIT_RANDOM:  # as many per layer as the profiled split, drawn with the seed
        from deeptalk.profiling import random_like

        profiled = ExpertSplit.from_json(cfg.paths.expert_split)
        counts = [len(profiled.speech_experts(i)) for i in range(profiled.n_layers)]
        return ExpertSplit(random_like(counts, model.moe_layers()[0].num_experts, cfg.seed))
    if spec.split == SPLIT_FIXED:
        path = profile_dir(cfg) / "splits.json"
        if not path.is_file():
            raise ValueError(f"{spec.name}: {path} missing; run profile_experts first")
        splits = json.loads(path.read_text())
        rule = cfg.training.fixed_split
        if rule not in splits:
            raise ValueError(f"{spec.name}: {path} has no split for rule {rule!r} (has {sorted(splits)})")
        return ExpertSplit(splits[rule])
    if spec.split in (SPLIT_INHERIT, SPLIT_ADDED):
        if model.expert_split is None and spec.routing is not RoutingMode.NONE:
            raise ValueError(f"{spec.name}: routing {spec.routing.value} needs a split but the init model has none")
        return model.expert_split
    raise ValueError(f"{spec.name}: unknown split source {spec.split!r}")


def load_init(
    spec: PhaseSpec, plan: Stage, cfg: ProjectConfig, layout, empty_on: torch.device | None = None
) -> SpeechLM:
    """The phase's starting weights; with ``empty_on``: its architecture in uninitialised storage on that device,
    no weights read (ZeRO-3 ranks other than 0 receive rank 0's values when the loop partitions the model)."""
    from deeptalk.model.config import SpeechLMConfig
    from deeptalk.model.speech_lm import SpeechLM
    from deeptalk.training.zero import empty_like_saved, materialize

    source = init_dir(cfg, plan, spec)
    if source is None:
        torch.manual_seed(cfg.seed)
        if empty_on is not None:
            with torch.device("meta"):
                model = SpeechLM.build(SpeechLMConfig.from_project(cfg, layout))
            return materialize(model, empty_on)
        return SpeechLM.build(SpeechLMConfig.from_project(cfg, layout))
    if not (source / "speech_lm.json").is_file():
        raise ValueError(f"{spec.name}: init model {source} is missing; run the stage that writes it first")
    if empty_on is not None:
        model = materialize(empty_like_saved(source), empty_on)
    else:
        model = SpeechLM.from_pretrained(source)
    if spec.objective == "align":  # S1 aligns a fresh interface of the profile's kind (seeded: reproducible)
        torch.manual_seed(cfg.seed)
        model.with_new_audio_interface(cfg.audio_input)
    return model


def _dir_signature(path: Path | None) -> str:
    """Content identity of an input (``deeptalk.identity.tree_digest``; resumable checkpoints under ``phases/``
    excluded). Sizes and mtimes would call a copied input new and miss an edit that keeps both."""
    if path is None or not path.exists():
        return "none"
    return tree_digest(path, exclude=("phases",))[:16]


def fingerprint(spec: PhaseSpec, loop: LoopConfig, cfg: ProjectConfig, init: Path | None, extra: Any) -> str:
    """What a finished stage output was trained from, so an unchanged stage is not retrained: spec, loop, seed,
    model, the init weights' content and the training code (every module the runner imports and the DeepSpeed
    configs, counted as the state of record counts them): a code change retrains here as it does for DVC and
    the flow."""
    canonical = {**asdict(spec), "trainable": sorted(g.value for g in spec.trainable), "routing": spec.routing.value}
    loop_fields = {k: v for k, v in asdict(loop).items() if k != "verify_checkpoints"}  # checks, not weights
    return json_digest({
        "spec": canonical, "loop": loop_fields, "seed": cfg.seed, "model": asdict(cfg.model),
        "init": _dir_signature(init), "extra": extra,
        "code": code_digests("deeptalk.training.runner", ("configs/deepspeed",)),
    })[:16]


def loop_config(spec: PhaseSpec, cfg: ProjectConfig) -> LoopConfig:
    t = cfg.training
    budget = t.budget(spec.budget)
    return LoopConfig(
        steps=budget.steps, batch_size=budget.batch_size, lr=budget.lr, grad_accum=budget.grad_accum,
        warmup_ratio=t.warmup_ratio if spec.warmup_ratio is None else spec.warmup_ratio,
        schedule=spec.schedule, grad_clip=t.grad_clip, weight_decay=t.weight_decay,
        deepspeed_config=spec.deepspeed_config or t.deepspeed_config, checkpoint_every=t.checkpoint_every,
        keep_checkpoints=t.keep_checkpoints, verify_checkpoints=t.verify_checkpoints, log_every=t.log_every,
        bf16=t.bf16, snapshot_every=t.curve_every,
    )


def prepare_model(
    spec: PhaseSpec, plan: Stage, cfg: ProjectConfig, layout, empty_on: torch.device | None = None
) -> tuple[SpeechLM, list[dict]]:
    """Init weights → split → routing → trainable groups: every stage choice applied in one place."""
    from deeptalk.model.freezing import apply_trainable

    model = load_init(spec, plan, cfg, layout, empty_on=empty_on)
    if spec.add_experts:
        from deeptalk.model.moextend import add_speech_experts

        model = add_speech_experts(model, cfg.training.moextend_experts)
    split = resolve_split(spec, cfg, model)
    if spec.split != SPLIT_INHERIT:
        model.set_expert_split(split)
    model.set_routing(spec.routing)
    for moe in model.moe_layers():
        moe.router.set_masked_gate(spec.masked_gate)
    groups = apply_trainable(model, spec.trainable, split)
    if cfg.training.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    model.train()
    return model, groups


def train_phase(
    spec: PhaseSpec,
    plan: Stage,
    cfg: ProjectConfig,
    dist: distributed.DistInfo,
    batches: Callable[[int], SpeechBatch],
    layout: TokenLayout,
    data_signature: str,
) -> dict:
    """Train one phase on ``batches`` (batch of step i); skipped when its output exists with the same settings."""
    out = phase_dir(cfg, plan, spec)
    loop = loop_config(spec, cfg)
    source = init_dir(cfg, plan, spec)
    split_file = cfg.paths.expert_split if spec.split in (SPLIT_PROFILED, SPLIT_RANDOM) else profile_dir(cfg) / "splits.json"
    fp = fingerprint(spec, loop, cfg, source, {
        "data": data_signature,
        "split": _dir_signature(split_file) if spec.split in (SPLIT_PROFILED, SPLIT_FIXED, SPLIT_RANDOM) else None,
        "fixed": cfg.training.fixed_split,
        "moextend": cfg.training.moextend_experts,
    })
    done = out / SUMMARY_FILE
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fp and (out / "speech_lm.json").is_file():
        log.info("%s: already trained with these settings (%s); skipping", spec.name, out)
        return {**json.loads(done.read_text()), "out": str(out)}
    # ZeRO-3: only rank 0 reads the weights; the others plan on an empty model and get rank 0's values
    empty_on = dist.device if zero_stage_of(loop) == 3 and not dist.is_main else None
    if empty_on is not None:
        log.info("%s: rank %d builds the model without reading weights (ZeRO-3: rank 0's are broadcast)",
                 spec.name, dist.rank)
    model, groups = prepare_model(spec, plan, cfg, layout, empty_on=empty_on)
    if zero_stage_of(loop) < 3:  # optimizer state for trainable expert rows only (ZeRO-3 partitions instead)
        from deeptalk.model.expert_rows import separate_trainable_experts

        groups = separate_trainable_experts(model, groups)
    if model.layout != layout:
        raise ValueError(f"{spec.name}: model layout {model.layout} differs from the data's {layout}")
    program = SpeechProgram(model, batches, dist.device, text_only=spec.text_only_input,
                            align_only=spec.objective == "align")
    log.info("%s: %s (init %s, routing %s, %d steps)", spec.name, spec.description, source,
             spec.routing.value, loop.steps)
    ckpt = checkpoint_dir(cfg, spec)
    summary = train(model, groups, program, loop, out, ckpt, dist, desc=spec.name, fingerprint=fp,
                    snapshot_dir=snapshot_dir(cfg, spec))
    if dist.is_main:  # the finished output (with its fingerprint) is the resume point from now on
        shutil.rmtree(ckpt, ignore_errors=True)
    return {**summary, "out": str(out)}


def heard_positions_for(model_dir: Path | None, cfg: ProjectConfig) -> dict[str, int] | None:
    """Positions of every stored user utterance as the CTC head of ``model_dir`` hears it (None: the model
    reads projected frames at the encoder geometry's rate, or there is no speech LM there yet)."""
    from deeptalk.data.processed import ProcessedStore
    from deeptalk.model.hearing import heard_positions
    from deeptalk.model.speech_lm import load_hearing

    loaded = load_hearing(model_dir) if model_dir is not None else None
    if loaded is None:
        return None
    head, temperature = loaded
    store = ProcessedStore(cfg.paths.processed)
    positions = heard_positions(head, store.n_positions, store.frames, temperature)
    empty = sum(1 for n in positions.values() if n == 0)
    log.info("hearing of %s: %d utterances, %.1f units each on average, %d heard as nothing", model_dir,
             len(positions), sum(positions.values()) / max(1, len(positions)), empty)
    return positions


def run_phase(spec: PhaseSpec, plan: Stage, cfg: ProjectConfig, dist: distributed.DistInfo) -> dict:
    """Train one phase on its data mix from ``cfg.paths.sequences``."""
    from deeptalk.data.dataset import SequenceDataset

    budget = cfg.training.budget(spec.budget)
    data = spec.data_for(cfg.audio_input.hears_text)
    # the profile's packing choices, at this phase's length and speech probability
    packing = replace(cfg.packing, max_length=budget.max_len, user_speech_prob=data.user_speech_prob)
    source = init_dir(cfg, plan, spec)
    positions = heard_positions_for(source, cfg) if spec.objective == "lm" else None
    dataset = SequenceDataset(cfg, "train", data.tasks, train=True, packing=packing, positions=positions)
    batches = MixedBatches(dataset, data, budget.batch_size, seed=cfg.seed * 7919 + dist.rank)
    signature = _dir_signature(Path(cfg.paths.sequences)) + repr(data) + repr(packing)
    return train_phase(spec, plan, cfg, dist, batches, dataset.layout, signature)


def run_stage(name: str, cfg: ProjectConfig, local_rank: int | None = None) -> dict:
    """Train every phase of stage ``name``; returns a summary per phase."""
    plan = get_stage(name)
    dist = distributed.init(local_rank, device=cfg.device)
    torch.manual_seed(cfg.seed)
    phases = [run_phase(spec, plan, cfg, dist) for spec in plan.phases]
    return {"stage": name, "out": phases[-1]["out"], "phases": phases}
