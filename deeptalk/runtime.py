"""Process-level runtime settings shared by steps, tests and the service.

Thread counts are decided here and nowhere else. A process gets the cores free on its machine (its CPU affinity,
capped by a container's CPU quota, minus the current load) divided by everything that shares them: the training
ranks on the node (``$LOCAL_WORLD_SIZE`` from torchrun, ``$LOCAL_SIZE`` from the deepspeed launcher), or the
service's worker processes times the answers each generates at once. ``$DEEPTALK_THREADS`` (per process)
overrides the arithmetic.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (``docker --cpus``)."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota else cores


def _cgroup_cpu_quota() -> int | None:
    try:
        fields = CGROUP_CPU_MAX.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    return math.ceil(int(fields[0]) / int(fields[1]))


def free_cores() -> int:
    """Available cores not busy right now (1-minute load average subtracted), at least 1.

    Oversubscribing a shared core made torch 20× slower on these machines, so defaults follow real load.
    """
    total = available_cores()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, total - busy)


def local_processes() -> int:
    """Processes of this job on this machine: ``$LOCAL_WORLD_SIZE`` (torchrun) or ``$LOCAL_SIZE`` (deepspeed
    launcher); 1 for a plain ``python`` process."""
    for var in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        if os.environ.get(var):
            return max(1, int(os.environ[var]))
    return 1


def threads_per_sharer(sharers: int, cores: int) -> int:
    """Threads for each of ``sharers`` processes (or concurrent callers) splitting ``cores``: at least 1."""
    if sharers < 1:
        raise ValueError(f"sharers must be >= 1, got {sharers}")
    return max(1, cores // sharers)


def setup_threads(threads: int = 0, sharers: int | None = None) -> int:
    """Set this process's torch threads and those of OpenMP code loaded later; return the count.

    First match wins: ``$DEEPTALK_THREADS``; ``threads`` (params.yaml ``threads``, per process) when > 0; else
    the free cores divided by ``sharers``, which defaults to the training ranks on this machine
    (``local_processes()``); the service passes its workers × concurrent answers. ``$OMP_NUM_THREADS`` is set to
    the same count for OpenMP runtimes not loaded yet, such as DeepSpeed's CPU Adam that runs the offloaded
    optimizer step (it links its own libgomp, which ``torch.set_num_threads`` does not reach, and torchrun
    would otherwise leave it at 1).
    """
    env = int(os.environ.get("DEEPTALK_THREADS") or 0)
    sharers = local_processes() if sharers is None else sharers
    n = env or threads or threads_per_sharer(sharers, free_cores())
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    log.debug("threads: %d (sharers on this machine: %d)", n, sharers)
    return n
