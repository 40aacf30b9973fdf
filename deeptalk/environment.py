"""Process environment defaults that every entry point applies (CLI, flows, service), so the README's commands
work the same inside and outside ``make``: an explicit environment variable always wins.

- Prefect keeps its database and result cache in the project (``.prefect/``), not in ``~/.prefect``: a step
  cached by one command is a cache hit for the next one, whichever way it was started.
- No telemetry: Prefect's server analytics and BentoML's usage tracking would try to reach the network (and log
  an error on machines without it).
- Hubs offline: weights never come from the network at run time (``DESIGN.md``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def env_defaults(root: str | Path | None = None) -> dict[str, str]:
    """The defaults for a project at ``root`` (default: the current directory)."""
    root = Path(root or Path.cwd()).resolve()
    return {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "BENTOML_DO_NOT_TRACK": "True",
        "DO_NOT_TRACK": "1",  # Prefect client telemetry (and its notice on every run)
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # DeepSpeed builds its CPU ops once into the virtual environment, not into ~/.cache
        "TORCH_EXTENSIONS_DIR": str(Path(sys.prefix) / "torch_extensions"),
    }


def apply_env_defaults(root: str | Path | None = None) -> dict[str, str]:
    """Set every default that the environment does not already set; returns those it set. Call before Prefect
    or BentoML is imported (both read their settings once)."""
    applied = {}
    for key, value in env_defaults(root).items():
        if key not in os.environ:
            os.environ[key] = applied[key] = value
    return applied
