"""The offloaded optimizer step (``zero2_offload``): DeepSpeed's CPU Adam vs torch's AdamW on one fp32 partition.

Under ZeRO offload every rank updates its partition of the trainable fp32 weights in host memory once per
optimizer step. This times both optimizers on the same ``--elements`` (fp32 weights + gradients + moments),
side by side in one run, with the threads each gets in training (torch: the runtime's fixed count; CPU Adam:
``optimizer_threads``), and scales the time per element to a paper rank's partition (``--partition``, default
the S2a-S3 trainable parameters over 8 ranks). Prints ``name: value`` lines.

    .venv/bin/python benchmarks/offload_optimizer.py
    .venv/bin/python benchmarks/offload_optimizer.py --elements 50000000 --partition 0.9e9
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".venv" / "torch_extensions"))

import torch  # noqa: E402

from deeptalk.runtime import setup_threads  # noqa: E402
from deeptalk.training.optimizer import build_optimizer, optimizer_threads  # noqa: E402

OFFLOAD = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
# S2a-S3 trainable parameters of the paper model (README, Memory) over 8 ranks
PAPER_PARTITION = 15.5e9 / 8


def seconds_per_step(config: dict, elements: int, steps: int) -> float:
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(elements))
    param.grad = torch.randn(elements)
    optimizer = build_optimizer([{"params": [param]}], config, lr=1e-4, weight_decay=0.0)
    optimizer.step()  # allocates the moments
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=20_000_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--partition", type=float, default=PAPER_PARTITION, help="elements of one rank's partition")
    args = parser.parse_args()
    threads = setup_threads()
    cpu_adam = seconds_per_step(OFFLOAD, args.elements, args.steps)
    adamw = seconds_per_step({}, args.elements, args.steps)
    per = {"cpu_adam": cpu_adam / args.elements, "torch_adamw": adamw / args.elements}
    print(f"elements: {args.elements}")
    print(f"threads_torch_adamw: {threads}")
    print(f"threads_cpu_adam: {optimizer_threads()}")
    for name, value in per.items():
        print(f"{name}_ns_per_element: {value * 1e9:.3f}")
        print(f"{name}_s_per_step_at_partition: {value * args.partition:.2f}")
    print(f"speedup_cpu_adam_over_torch_adamw: {adamw / cpu_adam:.2f}")


if __name__ == "__main__":
    main()
