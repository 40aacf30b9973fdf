"""TrainingConfig presets, validation and params.yaml overrides."""

from __future__ import annotations

import dataclasses

import pytest

from deeptalk.config import load_config
from deeptalk.training.config import StageBudget, TrainingConfig


@pytest.mark.parametrize("profile", ["tiny", "small", "paper"])
def test_presets_follow_the_reference_lr_ordering(profile):
    t = TrainingConfig.for_profile(profile)
    assert t.s2a.lr > t.s3.lr > t.s2b.lr, "paper.md §9: S2a > S3 > S2b"
    assert t.warmup_ratio == 0.03 and t.weight_decay == 0.0


def test_bad_values_raise():
    t = TrainingConfig.for_profile("tiny")
    with pytest.raises(ValueError, match="split rule"):
        dataclasses.replace(t, split_rule="top:3")
    with pytest.raises(ValueError, match="min_speech_fraction"):
        dataclasses.replace(t, min_speech_fraction=0.6, max_speech_fraction=0.5)
    with pytest.raises(ValueError, match="positive"):
        StageBudget(steps=0, batch_size=1, lr=1e-3)
    with pytest.raises(ValueError, match="no budget"):
        t.budget("s4")


def test_params_yaml_overrides_nested_budgets(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "training:\n  s2a: {steps: 7, batch_size: 2, lr: 0.01}\n  split_rule: fixed:3\n"
    )
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.training.s2a == StageBudget(steps=7, batch_size=2, lr=0.01, max_len=224)  # unset keys kept
    assert cfg.training.split_rule == "fixed:3"
    (tmp_path / "params.yaml").write_text("training:\n  s2a: {stepz: 7}\n")
    with pytest.raises(ValueError, match="stepz"):
        load_config(tmp_path / "params.yaml")
