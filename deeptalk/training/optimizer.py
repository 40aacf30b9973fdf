"""The optimizer of a training phase: torch's AdamW where the weights are, DeepSpeed's CPU Adam where ZeRO
offloads the optimizer (``offload_optimizer: {device: cpu}``, ``configs/deepspeed/zero2_offload.json``).

Offloaded, ZeRO keeps the fp32 master weights and both Adam moments in host memory and runs the update there, on
every element of the rank's partition each optimizer step. torch's AdamW does that several times slower than
DeepSpeed's vectorised C++ Adam (``benchmarks/offload_optimizer.py`` measures both on one partition), and
DeepSpeed refuses a client optimizer on that path unless a config says ``zero_force_ds_cpu_optimizer: false``
(none here does). Both are AdamW with the same betas, decoupled weight decay and bias correction.

The update is elementwise, so its thread count changes its speed, not its bits: it runs on every core this
rank may use (:func:`optimizer_threads`), while everything else keeps the runtime's fixed,
reproducible training count (``deeptalk.runtime``). DeepSpeed's op runs its OpenMP loops in the libgomp torch
loads, so ``torch.set_num_threads`` reaches it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from deeptalk.runtime import available_cores, local_processes, threads_per_sharer

log = logging.getLogger(__name__)

BETAS = (0.9, 0.95)  # the reference's AdamW betas


def offloads_optimizer(ds_config: dict[str, Any]) -> bool:
    """True when ZeRO runs the optimizer step in host memory (``offload_optimizer.device`` cpu or nvme)."""
    offload = ds_config.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") in ("cpu", "nvme")


def optimizer_threads() -> int:
    """Threads of the offloaded update: the cores this process may use, shared among the ranks on the node."""
    return threads_per_sharer(local_processes(), available_cores())


def run_step_on_threads(optimizer: torch.optim.Optimizer, threads: int) -> None:
    """Make ``optimizer.step`` run on ``threads`` torch/OpenMP threads and restore the caller's count afterwards
    (torch's step hooks: DeepSpeed accepts only its own optimizer classes, so no subclass)."""
    saved: list[int] = []

    def before(*_):
        saved.append(torch.get_num_threads())
        torch.set_num_threads(threads)

    def after(*_):
        torch.set_num_threads(saved.pop())

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)


def build_optimizer(param_groups: list[dict[str, Any]], ds_config: dict[str, Any], lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over ``param_groups`` (``freezing.apply_trainable``'s groups), DeepSpeed's CPU Adam when offloaded."""
    if offloads_optimizer(ds_config):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        threads = optimizer_threads()
        log.info("optimizer: DeepSpeed CPU Adam (ZeRO offload), %d threads", threads)
        optimizer = DeepSpeedCPUAdam(param_groups, lr=lr, betas=BETAS, weight_decay=weight_decay, adamw_mode=True)
        run_step_on_threads(optimizer, threads)
        return optimizer
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=BETAS)
