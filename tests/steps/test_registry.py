from pathlib import Path

import pytest

from deeptalk.config import load_config
from deeptalk.steps import STEPS, get_step
from deeptalk.steps.dvcfile import render

REPO = Path(__file__).resolve().parents[2]


def test_committed_dvc_files_are_rendered_from_the_registry():
    for path, text in render(load_config(REPO / "params.yaml")).items():
        assert (REPO / path).read_text() == text, f"{path} is stale: run `python -m deeptalk dvc-yaml --write`"


def test_every_step_module_has_run():
    import importlib

    for step in STEPS:
        module = importlib.import_module(f"deeptalk.steps.{step.module}")
        assert callable(module.run), step.module


def test_each_output_has_one_producer_and_every_input_is_produced_or_source():
    produced = {}
    for step in STEPS:
        for out in step.outs + step.metrics + step.plots:
            assert out not in produced, f"{out} produced by {produced.get(out)} and {step.name}"
            produced[out] = step.name
    for step in STEPS:
        for dep in step.deps:
            made = any(dep == out or dep.startswith(out + "/") for out in produced)
            assert not dep.startswith("deeptalk/"), f"{step.name}: code deps come from imports, not the registry"
            assert made or (REPO / dep).exists(), f"{step.name} reads {dep}, which nothing makes"


def test_unknown_step_names_the_choices():
    with pytest.raises(ValueError, match="unknown step 'trian'.*generate_data"):
        get_step("trian")


def test_resolve_config_refuses_pipeline_files_this_config_makes_stale(tmp_path, monkeypatch):
    """evaluation.stage decides which model evaluate and package read: a dvc.yaml for another stage is refused
    before anything is written (DVC would otherwise track the wrong model)."""
    import shutil

    from deeptalk.__main__ import main

    for rel in ("dvc.yaml", "baselines/dvc.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    (tmp_path / "params.yaml").write_text("evaluation: {stage: s2b}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="dvc.yaml no longer match.*dvc-yaml --write"):
        main(["resolve-config"])
    assert not (tmp_path / ".deeptalk").exists()
    assert "models/stages/s2b" in render(load_config(tmp_path / "params.yaml"))["dvc.yaml"]


def test_the_registry_and_the_configuration_load_without_torch():
    """Every DVC stage is a process (``python -m deeptalk step …``, ``resolve-config`` on each ``dvc repro``): what
    it reads before its step's own code runs must not pay for torch, transformers and DeepSeek-V2's modelling
    (~6 s per process before the stage table's switches lived in deeptalk.model.switches)."""
    import subprocess
    import sys

    probe = ("import sys, deeptalk.config, deeptalk.steps.record, deeptalk.__main__; "
             "deeptalk.config.load_config('params.yaml'); "
             "print(sorted(m for m in ('torch', 'transformers', 'deepspeed', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
