"""The DeepSpeed training loop shared by every stage: engine, schedule, checkpoints, resume, metrics.

It knows nothing about speech or experts. A stage hands it a module, the optimizer parameter groups and a
``TrainProgram`` (how to get micro-batch i, how to compute the loss, how to export weights). Micro-batches are
a pure function of their index (optimizer step × ``grad_accum`` + micro-step), so resuming needs only the step
number as the data position, and a run killed at any point and restarted from its last checkpoint ends with the
same weights as an uninterrupted one.

Precision: the module is trained in one dtype, bf16 when DeepSpeed's bf16 is on (CUDA and ``bf16: true``),
else fp32. A checkpoint stored in bf16 (DeepSeek-V2-Lite) is cast to fp32 for an fp32 run, with a warning:
leaving frozen parameters in bf16 beside fp32 trainable ones fails in the first matmul.
Under ZeRO-3 (``configs/deepspeed/zero3.json``) the module is partitioned before the engine is built and
weights are exported gathered (``deeptalk.training.zero``); every rank takes part in each export.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from deeptalk.training import distributed, zero
from deeptalk.training.checkpoints import CheckpointManager
from deeptalk.training.metrics import MetricsLog, RunStats, write_plots
from deeptalk.training.optimizer import build_optimizer

log = logging.getLogger(__name__)

DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    batch_size: int  # per process and micro-batch (DeepSpeed's train_micro_batch_size_per_gpu)
    lr: float
    grad_accum: int = 1  # micro-batches per optimizer step (DeepSpeed's gradient_accumulation_steps)
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # cosine | constant (both after linear warmup)
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    deepspeed_config: str = "zero2"
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    verify_checkpoints: str = "full"  # on resume: "size" (manifest + sizes) or "full" (+ sha256, split by rank)
    log_every: int = 10
    bf16: bool = False  # only on CUDA
    snapshot_every: int = 0  # export the weights every N optimizer steps into train(snapshot_dir=) (0: off; compare)

    def __post_init__(self) -> None:
        if self.schedule not in {"cosine", "constant"}:
            raise ValueError(f"unknown schedule {self.schedule!r}; use cosine or constant")
        if self.steps <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError(f"steps, batch_size and grad_accum must be positive, got {self.steps}, "
                             f"{self.batch_size}, {self.grad_accum}")


@dataclass
class StepResult:
    loss: torch.Tensor  # scalar, with grad
    stream_losses: dict[str, float]  # detached per-stream losses for the progress bar and the log
    tokens: int  # supervised positions in the batch (for tokens/s)


class TrainProgram(Protocol):
    """The stage-specific side of training."""

    def batch(self, step: int) -> Any:
        """Micro-batch number ``step`` (0-based; optimizer step × grad_accum + micro-step); must depend only on
        ``step`` and fixed seeds."""

    def forward(self, module: nn.Module, batch: Any) -> StepResult: ...

    def interval_metrics(self) -> dict[str, Any]:
        """Extra fields for the current logging interval (e.g. expert load); resets its accumulators."""

    def export(self, module: nn.Module, out_dir: Path) -> None:
        """Write usable weights (HF-style) to ``out_dir``."""


def lr_lambda(step: int, total: int, warmup_ratio: float, schedule: str) -> float:
    """Multiplier of the peak lr: linear warmup over ``ceil(warmup_ratio·total)`` steps, then cosine to 0."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _load_deepspeed_json(name: str) -> dict[str, Any]:
    path = DEEPSPEED_CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in DEEPSPEED_CONFIG_DIR.glob("*.json"))
        raise ValueError(f"DeepSpeed config {name!r} not found in {DEEPSPEED_CONFIG_DIR}: {known}")
    return json.loads(path.read_text())


def zero_stage_of(loop: LoopConfig) -> int:
    """The ZeRO stage of ``loop.deepspeed_config`` (3: parameters partitioned, see ``deeptalk.training.zero``)."""
    return zero.zero_stage(_load_deepspeed_json(loop.deepspeed_config))


def deepspeed_config(loop: LoopConfig, world_size: int, device: torch.device) -> dict[str, Any]:
    """Load ``configs/deepspeed/<name>.json`` and fill in what the stage decides (batch, clipping, dtype)."""
    cfg = _load_deepspeed_json(loop.deepspeed_config)
    cfg.update(
        train_micro_batch_size_per_gpu=loop.batch_size,
        gradient_accumulation_steps=loop.grad_accum,
        train_batch_size=loop.batch_size * loop.grad_accum * world_size,
        gradient_clipping=loop.grad_clip,
    )
    cfg["bf16"] = {"enabled": bool(loop.bf16 and device.type == "cuda")}
    # offload stays on CPU ranks too: the same ZeRO partitions and DeepSpeed CPU Adam step as on GPUs (pinning
    # is a no-op there), so zero2_offload is exercised without a GPU
    return cfg


def training_dtype(ds_config: dict[str, Any]) -> torch.dtype:
    return torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32


def cast_for_training(module: nn.Module, dtype: torch.dtype, desc: str) -> None:
    """Give every floating parameter ``dtype`` (in place: the parameter objects, their gradient hooks and the
    optimizer groups stay valid); buffers keep theirs (RoPE's ``inv_freq`` stays fp32: ``cast_parameters``).
    Mixed dtypes fail in the first matmul once DeepSpeed has cast the trainable ones; a bf16 checkpoint trained
    with bf16 off becomes fp32 (twice the memory), said here."""
    from deeptalk.model.backbone import cast_parameters

    found = {p.dtype for p in module.parameters() if p.is_floating_point()}
    if found - {dtype}:
        if dtype == torch.float32:
            log.warning("%s: weights in %s, DeepSpeed bf16 is off (training.bf16 false or no CUDA): training in "
                        "fp32 (2x the memory of bf16)", desc, sorted(str(d) for d in found))
        cast_parameters(module, dtype)


def export_weights(program: TrainProgram, module: nn.Module, out_dir: Path) -> None:
    """Write ``program.export`` on rank 0; collective under ZeRO-3 (every rank must call it)."""
    with zero.full_weights(module):
        if distributed.is_main_process():
            program.export(module, out_dir)
    distributed.barrier()


def train(
    module: nn.Module,
    param_groups: list[dict[str, Any]],
    program: TrainProgram,
    loop: LoopConfig,
    out_dir: Path,
    checkpoint_dir: Path,
    dist: distributed.DistInfo,
    desc: str = "train",
    fingerprint: str = "",
    snapshot_dir: Path | None = None,
) -> dict[str, Any]:
    """Train ``loop.steps`` optimizer steps (resuming from ``checkpoint_dir`` when possible) and export.

    With ``loop.snapshot_every`` and ``snapshot_dir``, usable weights are also exported every that many steps
    (``snapshot_dir/step000040``; not after the last step, whose weights are ``out_dir``'s): the comparison
    evaluates them for its retention-vs-speech curve.

    ``fingerprint`` identifies the run's settings; checkpoints written under another fingerprint (an older
    configuration) are never resumed from.
    """
    import deepspeed

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainable = [p for g in param_groups for p in g["params"]]
    if not trainable:
        raise ValueError(f"{desc}: no trainable parameters")
    ds_config = deepspeed_config(loop, dist.world_size, dist.device)
    cast_for_training(module, training_dtype(ds_config), desc)
    if zero.zero_stage(ds_config) == 3:
        zero.partition(module, ds_config, dist.device)
    optimizer = build_optimizer(param_groups, ds_config, loop.lr, loop.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, loop.steps, loop.warmup_ratio, loop.schedule)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config,
    )
    manager = CheckpointManager(checkpoint_dir, keep=loop.keep_checkpoints, verify=loop.verify_checkpoints)
    start = 0
    found = manager.latest_valid(fingerprint)
    if found is not None:
        if found.step > loop.steps:
            raise ValueError(f"{desc}: checkpoint {found.path} is past the configured {loop.steps} steps")
        manager.load(found, engine)
        start = found.step
    metrics = MetricsLog(out_dir / "metrics.jsonl", resume_step=start if found is not None else None)
    stats = RunStats()
    engine.train()
    bar = tqdm(total=loop.steps, initial=start, desc=desc, disable=not dist.is_main, dynamic_ncols=True)
    running: dict[str, float] = {}
    n_running = 0
    for step in range(start, loop.steps):
        losses: dict[str, float] = {}
        for micro in range(loop.grad_accum):  # engine.step() updates the weights after the last one
            result = program.forward(engine, program.batch(step * loop.grad_accum + micro))
            if not torch.isfinite(result.loss):
                raise FloatingPointError(f"{desc}: non-finite loss at step {step}: {result.loss.item()}")
            engine.backward(result.loss)
            engine.step()
            stats.add_tokens(result.tokens)
            for k, v in {"loss": float(result.loss.detach()), **result.stream_losses}.items():
                losses[k] = losses.get(k, 0.0) + v / loop.grad_accum
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + v
        n_running += 1
        done = step + 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        if done % loop.log_every == 0 or done == loop.steps:
            mean = {k: v / n_running for k, v in running.items()}
            record = {
                "step": done,
                "lr": scheduler.get_last_lr()[0],
                "loss": mean.pop("loss"),
                "stream_losses": mean,
                "tokens_per_s": stats.interval_rate(),
                **program.interval_metrics(),
            }
            if dist.is_main:
                metrics.write(record)
            running, n_running = {}, 0
        if done % loop.checkpoint_every == 0 or done == loop.steps:
            state = {"data_position": done, "stage": desc, "fingerprint": fingerprint}
            manager.save(done, engine, state, lambda d: export_weights(program, module, d))
        if loop.snapshot_every and snapshot_dir is not None and done % loop.snapshot_every == 0 and done < loop.steps:
            export_weights(program, module, Path(snapshot_dir) / f"step{done:06d}")
    bar.close()
    summary = {
        "stage": desc, "steps": loop.steps, "resumed_from": start, "fingerprint": fingerprint, **stats.summary(),
    }
    export_weights(program, module, out_dir)
    if dist.is_main:
        write_plots(metrics.records(), out_dir / "plots")
        (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
        log.info("%s: %s", desc, summary)
    distributed.barrier()
    return summary
