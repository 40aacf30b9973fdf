"""Step ``align`` (S1): projector and new embedding rows on ASR; frozen Whisper encoder and backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deeptalk.training.runner import run_stage

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig


def run(cfg: ProjectConfig) -> dict:
    return run_stage("s1", cfg)
