"""Process-group setup for the DeepSpeed runner.

One code path for three launch modes: a plain ``python`` process (tests, the tiny profile on CPU), ``torchrun``
and the ``deepspeed`` launcher (``deepspeed --num_gpus N --module deeptalk.training …``; it also passes
``--local_rank=N``). Without a launcher DeepSpeed would fall back to MPI discovery and fail on machines without
mpi4py (STACK.md), so a single process fills in its rank variables and joins an in-memory process group that
DeepSpeed adopts: no rendezvous address, so no port is invented (one picked now and bound later can be taken in
between, and ``os.environ`` would hand it to every child process as if a launcher had set it).
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch

_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def collective_timeout() -> timedelta:
    """How long a rank waits in a collective: ``$DEEPSPEED_TIMEOUT`` minutes, else 60.

    DeepSpeed's default, 10 min, is shorter than a paper-scale checkpoint: while the other ranks wait at the
    barrier after their 23 GB optimizer shard, rank 0 writes the 33 GB export, DeepSpeed's 33 GB module state
    and its own shard (~89 GB) and hashes them: at 200 MB/s (a network file system) ~7.5 min of writing and
    ~2-3 min of hashing (README, "Checkpoints").
    """
    return timedelta(minutes=int(os.environ.get("DEEPSPEED_TIMEOUT") or 60))


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_local_rank(argv: list[str] | None = None) -> int | None:
    """The ``--local_rank``/``--local-rank`` the ``deepspeed`` launcher appends, if any (other args are left)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None)
    known, _ = parser.parse_known_args(argv)
    return known.local_rank


def ensure_env(local_rank: int | None = None) -> bool:
    """Fill in a single process's rank variables where no launcher set the rendezvous; True when none did."""
    if local_rank is not None:
        os.environ["LOCAL_RANK"] = str(local_rank)
    missing = [k for k in _REQUIRED if k not in os.environ]
    if not missing:
        return False
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set: use a launcher")
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    return True


def init(local_rank: int | None = None, device: str = "auto") -> DistInfo:
    """Initialise ``torch.distributed`` through DeepSpeed: NCCL on CUDA, gloo on CPU. Idempotent.

    ``device`` is the project's device setting (``auto`` | ``cpu`` | ``cuda``): ``cpu`` trains on the CPU even
    where GPUs are visible; ``cuda`` without a GPU is an error. Each rank takes GPU ``LOCAL_RANK``.
    """
    from deeptalk.runtime import resolve_device

    cuda = resolve_device(device, "device").type == "cuda"
    if not cuda and torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would otherwise pick CUDA on its own
    import deepspeed

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(os.getcwd(), ".venv", "torch_extensions"))
    single = ensure_env(local_rank)
    backend = "nccl" if cuda else "gloo"
    if single and not torch.distributed.is_initialized():  # one process: an in-memory store DeepSpeed adopts
        torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1,
                                             timeout=collective_timeout())
    if not torch.distributed.is_initialized() or not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, timeout=collective_timeout())
    local = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return DistInfo(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local,
        device=device,
        backend=backend,
    )


def barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def all_gather(obj: object) -> list:
    """``obj`` from every rank, in rank order (picklable objects; ``[obj]`` without a process group)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out
