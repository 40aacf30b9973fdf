"""Training budgets and switches per profile (``cfg.training``).

Only *how much* and *how* to train lives here (steps, batch, learning rate, split rule, checkpoint cadence,
DeepSpeed config, precision). *What* each stage trains (parameter groups, routing mask, data tasks) is the
stage spec's job (``deeptalk.training.stages``), so that no stage choice can leak into a checkpoint config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from deeptalk.presets import preset

SPLIT_RULE = re.compile(r"^(adaptive|fixed:\d+|random:\d+)$")
VERIFY_MODES = ("size", "full")  # resume checks of a checkpoint: manifest + sizes, or also every sha256


@dataclass(frozen=True)
class StageBudget:
    """Optimisation budget of one training stage (or of each phase of a baseline)."""

    steps: int
    batch_size: int
    lr: float
    max_len: int = 256  # sequences are truncated to this many positions at collate time
    # micro-batches per optimizer step: batch_size is per process and micro-batch, so the global batch is
    # batch_size × grad_accum × ranks (the reference's S2a: 14 × 4 × 8 = 448)
    grad_accum: int = 1

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.max_len <= 0 or self.grad_accum <= 0:
            raise ValueError(f"stage budget needs positive steps, batch_size, max_len and grad_accum, got {self}")
        if not self.lr > 0:
            raise ValueError(f"stage budget needs a positive learning rate, got {self.lr}")

    def global_batch(self, ranks: int) -> int:
        """Sequences per optimizer step over ``ranks`` data-parallel processes."""
        return self.batch_size * self.grad_accum * ranks


@dataclass(frozen=True)
class TrainingConfig:
    """Per-stage budgets and runner switches.

    The learning-rate ordering follows the reference (paper.md §3, §9): S2a 1e-4 > S3 5e-5 > S1, S2b 2e-5,
    scaled up for the tiny/small profiles, which train for hundreds rather than thousands of steps.
    """

    text_pretrain: StageBudget
    s1: StageBudget
    s2a: StageBudget
    s2b: StageBudget
    s3: StageBudget
    plain: StageBudget  # the no-split baseline runs once, with S2a+S2b+S3's total steps by default
    split_rule: str = "adaptive"  # adaptive | fixed:N | random:N (profile_experts writes this split)
    fixed_split: str = "fixed:4"  # the rule of the "fixed" baseline (the reference's audio20 at 64 experts)
    min_speech_fraction: float = 0.25  # adaptive rule: at least / at most this share of a layer's experts
    max_speech_fraction: float = 0.5
    moextend_experts: int = 4  # experts added per MoE layer by the MoExtend baseline
    # baselines and ablations compare trains beside DeepTalk (stage names of the chain, deeptalk.training.stages;
    # compare checks them before it trains anything)
    baselines: tuple[str, ...] = ()
    curve_every: int = 0  # compare: export weights every N steps of a phase for the retention curve (0: off)
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints
    keep_checkpoints: int = 2
    # resume check: "full" re-hashes every file (each rank a share), "size" trusts the write-time hashes and
    # checks the manifest and sizes only (paper: ~250 GB per checkpoint)
    verify_checkpoints: str = "full"
    log_every: int = 10
    warmup_ratio: float = 0.03
    grad_clip: float = 1.0
    weight_decay: float = 0.0  # the reference trains with weight decay 0
    deepspeed_config: str = "zero2"  # configs/deepspeed/<name>.json
    gradient_checkpointing: bool = False  # trades compute for memory; used on GPU profiles
    bf16: bool = False  # honoured only on CUDA devices; CPU trains in fp32
    profile_batches: int = 8  # held-out batches the expert-load profiler runs over
    eval_batches: int = 8  # held-out batches for perplexity

    def __post_init__(self) -> None:
        for rule in (self.split_rule, self.fixed_split):
            if not SPLIT_RULE.match(rule):
                raise ValueError(f"split rule {rule!r} is not one of adaptive | fixed:N | random:N")
        if not 0 < self.min_speech_fraction <= self.max_speech_fraction < 1:
            raise ValueError(
                f"need 0 < min_speech_fraction <= max_speech_fraction < 1, got "
                f"{self.min_speech_fraction}, {self.max_speech_fraction}"
            )
        if self.curve_every < 0:
            raise ValueError(f"training.curve_every must be >= 0 (0: no snapshots), got {self.curve_every}")
        if self.checkpoint_every <= 0 or self.log_every <= 0 or self.keep_checkpoints <= 0:
            raise ValueError("checkpoint_every, log_every and keep_checkpoints must be positive")
        if self.verify_checkpoints not in VERIFY_MODES:
            raise ValueError(f"verify_checkpoints must be one of {VERIFY_MODES}, got {self.verify_checkpoints!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    def budget(self, stage: str) -> StageBudget:
        """Budget of a stage by name; baseline phases reuse the budget of the stage they mirror."""
        budgets = [f.name for f in fields(self) if f.type in (StageBudget, "StageBudget")]
        if stage not in budgets:
            raise ValueError(f"no budget named {stage!r}; budgets: {', '.join(budgets)}")
        return getattr(self, stage)

    @classmethod
    def for_profile(cls, profile: str) -> TrainingConfig:
        """The ``training`` section of ``configs/profiles/<profile>.yaml``."""
        return preset(cls, "training", profile)
