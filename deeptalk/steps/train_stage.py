"""Step ``train_stage``: any named stage plan (``s2a``, ``s2b``, ``s3`` or a baseline: ``plain``, ``fixed``,
``moextend``, ``strict``), see ``deeptalk.training.stages``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deeptalk.training.runner import run_stage

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig


def run(cfg: ProjectConfig, stage: str) -> dict:
    return run_stage(stage, cfg)
