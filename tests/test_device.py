"""The one device setting (``device`` in params.yaml, ``$DEEPTALK_DEVICE`` for the service): resolved in one place
and honoured by every step that runs a model. No GPU here: ``cuda`` must fail with an error naming the setting, and
with a GPU faked visible, ``auto`` must make each step try to put its model on CUDA (this torch has no CUDA, so
that attempt is the observable)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deeptalk import runtime
from deeptalk.config import load_config
from tests.training.helpers import save_tiny_model, tiny_cfg


def test_settings_are_checked_and_resolved():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cpu:1", ""):
        with pytest.raises(ValueError, match="auto | cpu | cuda"):
            runtime.check_device_setting(bad)
    assert runtime.check_device_setting("cuda:1") == "cuda:1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_cuda_without_a_gpu_is_an_error_naming_the_setting(monkeypatch):
    with pytest.raises(ValueError, match="params: device is 'cuda' but no CUDA device is visible"):
        runtime.resolve_device("cuda", "params: device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        runtime.resolve_device("cuda:3")


def test_params_device_is_typed(tmp_path):
    (tmp_path / "params.yaml").write_text("device: cpu\n")
    assert load_config(tmp_path / "params.yaml").device == "cpu"
    assert load_config(tmp_path / "none.yaml").device == "auto"
    (tmp_path / "params.yaml").write_text("device: gpu\n")
    with pytest.raises(ValueError, match="params: device: 'gpu'"):
        load_config(tmp_path / "params.yaml")


def _text_ability(cfg):
    from deeptalk.evaluation.suite import text_ability_of

    return text_ability_of(cfg.paths.stage("s1"), cfg, held=None, tokenizer=None)


def _engine(cfg):
    from deeptalk.evaluation.engine import load_engine

    return load_engine(cfg, cfg.paths.stage("s1"))


def _profile(cfg):
    from deeptalk.steps import profile_experts

    return profile_experts.run(cfg)


def _train(cfg):
    from deeptalk.training.runner import run_stage

    return run_stage("s2a", cfg)


def _text_baseline(cfg):
    from deeptalk.steps import text_pretrain

    return text_pretrain.run(cfg)


STEPS = {"evaluation (text ability)": _text_ability, "evaluation/serving engine": _engine,
         "expert profiling": _profile, "training": _train, "text baseline": _text_baseline}


@pytest.fixture
def project(tmp_path):
    cfg = tiny_cfg(tmp_path)
    save_tiny_model(cfg, cfg.paths.stage("s1"))
    return cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
@pytest.mark.parametrize("step", STEPS.values(), ids=STEPS.keys())
def test_every_model_step_asks_for_the_configured_device(project, step, monkeypatch):
    with pytest.raises(ValueError, match="device is 'cuda' but no CUDA device is visible"):
        step(dataclasses.replace(project, device="cuda"))
    # a GPU "visible" (faked): with auto, the step moves its model to CUDA, which this torch build cannot do
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises((AssertionError, RuntimeError, AttributeError), match="(?i)cuda|nccl"):
        step(dataclasses.replace(project, device="auto"))
