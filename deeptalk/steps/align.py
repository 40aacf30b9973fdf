"""Step ``align`` (S1): projector, audio encoder and new embedding rows on ASR; backbone frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deeptalk.training.runner import run_stage

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig


def run(cfg: ProjectConfig) -> dict:
    return run_stage("s1", cfg)
