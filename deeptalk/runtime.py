"""Process-level runtime settings shared by steps, tests and the service."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def free_cores() -> int:
    """Cores not busy right now (1-minute load average subtracted), at least 1.

    Oversubscribing a shared core made torch 20× slower on these machines, so defaults follow real load.
    """
    total = len(os.sched_getaffinity(0))
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, total - busy)


def setup_threads(threads: int = 0) -> int:
    """Set torch intra-op threads (``0`` = free cores, overridable by ``$DEEPTALK_THREADS``)."""
    n = int(os.environ.get("DEEPTALK_THREADS", threads or 0)) or free_cores()
    torch.set_num_threads(n)
    log.debug("torch threads: %d", n)
    return n
