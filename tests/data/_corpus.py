"""A small generated corpus shared by the data tests (built once per test process, ~10 s on one core)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from deeptalk.data.config import DataConfig

SMALL_COUNTS = {"asr": (4, 2, 2), "tts": (2, 1, 1), "aqa": (4, 1, 2), "tqa": (2, 1, 2), "rqa": (3, 1, 2)}


def small_config(seed: int = 0, **changes) -> DataConfig:
    return DataConfig(**{"seed": seed, "counts": SMALL_COUNTS, "max_facts": 80, "workers": 2, **changes})


@functools.cache
def small_corpus(seed: int = 0) -> Path:
    """Path of a corpus built with ``small_config(seed)``; treat it as read-only (copy before corrupting)."""
    from deeptalk.data.corpus import build_corpus

    root = Path(tempfile.mkdtemp(prefix=f"deeptalk-corpus-{seed}-")) / "raw"
    atexit.register(shutil.rmtree, root.parent, True)
    build_corpus(small_config(seed), root)
    return root
