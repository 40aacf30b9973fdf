"""Process-level runtime settings shared by steps, tests and the service.

Thread counts are decided here and nowhere else. Training and evaluation default to a **fixed** count,
``DEFAULT_THREADS`` per process (fewer only when the process may use fewer cores: its CPU affinity or a
container's CPU quota, divided among the training ranks on the node), never the cores that happen to be free:
torch's CPU reductions split work by thread count, so a different count gives different bits, and a model trained
while another job ran came out different (the base model's held-out QA moved 57.5 % -> 77.5 % with a thread
change). Given the seed and the thread count, training is bit-reproducible. The service, where latency matters
and bits do not, splits the cores free right now among its workers times the answers each generates at once.
``threads`` in ``params.yaml`` or ``$DEEPTALK_THREADS`` (per process) override both.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
# Threads per training/evaluation process when nothing is configured. 2: the machine every tiny/small figure in
# the README is measured on has 2 cores, so the default reproduces them bit for bit there; a fixed number (not the
# free cores) keeps results identical whatever else runs. On a bigger machine set ``threads`` for speed: results
# are then reproducible for that count.
DEFAULT_THREADS = 2


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

    The service's default (latency): oversubscribing a shared core made torch 20× slower on these machines.
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


def default_threads(sharers: int | None = None) -> int:
    """``DEFAULT_THREADS`` per process, capped by the cores this process may use divided by ``sharers`` (default:
    the training ranks on this machine). Independent of the machine's load (see the module docstring)."""
    sharers = local_processes() if sharers is None else sharers
    return min(DEFAULT_THREADS, threads_per_sharer(sharers, available_cores()))


def setup_threads(threads: int = 0, sharers: int | None = None) -> int:
    """Set this process's torch threads and those of OpenMP code loaded later; return the count.

    First match wins: ``$DEEPTALK_THREADS``; ``threads`` (params.yaml ``threads``, per process) when > 0; with
    ``sharers`` given (the service: its workers × concurrent answers), the free cores divided by ``sharers``;
    else :func:`default_threads` (training and evaluation: fixed, so results do not depend on the load).
    ``$OMP_NUM_THREADS`` is set to the same count for OpenMP runtimes not loaded yet, such as DeepSpeed's CPU
    Adam that runs the offloaded optimizer step (it links its own libgomp, which ``torch.set_num_threads`` does
    not reach, and torchrun would otherwise leave it at 1).
    """
    import torch  # here, not at import: the project's configuration reads this module without needing torch

    env = int(os.environ.get("DEEPTALK_THREADS") or 0)
    n = env or threads or (default_threads() if sharers is None else threads_per_sharer(sharers, free_cores()))
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    log.debug("threads: %d (sharers: %s)", n, sharers)
    return n


# ---- device ----------------------------------------------------------------------------------------------------
# ``device`` in params.yaml (pipeline steps) or ``$DEEPTALK_DEVICE`` (the service): every model-running step asks
# here, so one setting moves training, text baseline, expert profiling, evaluation and serving together.
DEVICE_SETTINGS = ("auto", "cpu", "cuda")  # "cuda:N" names one GPU


def check_device_setting(setting: str, where: str = "device") -> str:
    """``setting`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a ValueError naming ``where`` otherwise."""
    base, _, index = str(setting).partition(":")
    if base not in DEVICE_SETTINGS or (index and (base != "cuda" or not index.isdigit())):
        raise ValueError(f"{where}: {setting!r} is not one of auto | cpu | cuda | cuda:N")
    return str(setting)


def resolve_device(setting: str = "auto", where: str = "device") -> torch.device:
    """The torch device of ``setting``: ``auto`` is CUDA when a GPU is visible, else the CPU. Asking for CUDA on a
    machine without one is an error naming the setting, never a silent fall-back to hours of CPU work."""
    import torch

    setting = check_device_setting(setting, where)
    if setting == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{where} is {setting!r} but no CUDA device is visible; set it to cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{where} is {setting!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device
