"""The state of record: a step's complete dependencies, and skipping only what is really current."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from deeptalk.config import load_config
from deeptalk.steps import DEFAULT_CHAIN, STEPS, StepSpec, get_step
from deeptalk.steps.record import is_current, run_recorded, step_fingerprint, step_record


def _cfg(root: Path, **overrides):
    return load_config(root / "params.yaml", profile="tiny", overrides=overrides, root=root)


def test_records_hold_presets_and_only_what_each_step_reads(tmp_path):
    """Issue 12: text_pretrain and align hung on the whole training section (a split-rule run retrained the base)."""
    default, split = _cfg(tmp_path), _cfg(tmp_path, training={"split_rule": "fixed:4"})
    changed = {s.name for s in STEPS if step_record(s, default).config != step_record(s, split).config}
    assert changed == {"profile_experts"}
    record = step_record(get_step("text_pretrain"), default)
    assert record.config["training.text_pretrain"]["steps"] == 1500  # tiny's preset value, not a section name
    assert "split_rule" not in json.dumps(record.config)
    small = load_config(tmp_path / "params.yaml", profile="small", root=tmp_path)
    assert all(step_record(s, default).config != step_record(s, small).config for s in STEPS), "profile switch"


def test_resolved_config_has_no_absolute_paths(tmp_path):
    """Two clones of the project resolve to the same file (encoder_checkpoint is made absolute in the config)."""
    a = step_record(get_step("align"), _cfg(tmp_path / "a")).resolved
    b = step_record(get_step("align"), _cfg(tmp_path / "b")).resolved
    assert a == b and str(tmp_path) not in json.dumps(a)


def test_a_training_step_records_its_code_and_the_deepspeed_configs():
    record = step_record(get_step("train_s2a"), load_config())
    assert {"deeptalk/steps/train_stage.py", "deeptalk/training/runner.py", "deeptalk/identity.py"} <= set(record.code)
    assert any(path.startswith("configs/deepspeed/") for path in record.code), "DeepSpeed configs steer training"


def test_the_default_chain_is_the_chain_table_without_baselines():
    from deeptalk.training.stages import BASELINES, CHAIN, PROFILED_FROM

    trained = [stage.step for stage in CHAIN if stage.name not in BASELINES]
    assert [s for s in DEFAULT_CHAIN if get_step(s).heavy] == trained
    assert DEFAULT_CHAIN.index("profile_experts") == DEFAULT_CHAIN.index(
        next(s.step for s in CHAIN if s.name == PROFILED_FROM)) + 1
    assert DEFAULT_CHAIN[-2:] == ("evaluate", "package")
    assert {get_step(f"train_{b}").baseline for b in BASELINES} == {True}


# ---- skipping ------------------------------------------------------------------------------------------------
CALLS: list[int] = []


def _demo_step(monkeypatch, tmp_path) -> StepSpec:
    import sys
    import types

    def run(cfg):
        CALLS.append(1)
        (cfg.paths.root / "out").mkdir(exist_ok=True)
        (cfg.paths.root / "out" / "x.txt").write_text((cfg.paths.root / "inputs" / "a.txt").read_text()
                                                      + str(cfg.data.max_words))
        return {"n": 1}

    monkeypatch.setitem(sys.modules, "deeptalk.steps.demo_step", types.SimpleNamespace(run=run))
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.txt").write_text("one")
    CALLS.clear()
    return StepSpec("demo", "demo_step", ("inputs",), ("out",), ("data.max_words",))


def test_a_step_is_skipped_only_while_inputs_and_outputs_are_as_recorded(tmp_path, monkeypatch):
    step = _demo_step(monkeypatch, tmp_path)
    cfg = _cfg(tmp_path)
    assert run_recorded(step, cfg) == ({"n": 1, "step": "demo", "wall_s": pytest.approx(0, abs=5)}, True)
    assert run_recorded(step, cfg)[1] is False and CALLS == [1]
    (tmp_path / "inputs" / "__pycache__").mkdir()
    (tmp_path / "inputs" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert is_current(step, cfg), "byte-code caches are not inputs"

    (tmp_path / "out" / "x.txt").write_text("another run's output")  # what a cached Prefect task used to keep
    assert not is_current(step, cfg)
    run_recorded(step, cfg)
    assert (tmp_path / "out" / "x.txt").read_text() == "one16" and len(CALLS) == 2

    assert not is_current(step, _cfg(tmp_path, data={"max_words": 9})), "a config value it reads"
    assert is_current(step, _cfg(tmp_path, codec={"codebook_size": 512})), "a value it does not read"
    (tmp_path / "inputs" / "a.txt").write_text("two")
    assert not is_current(step, cfg), "its data"


def test_a_failed_step_leaves_no_record_and_missing_outputs_are_an_error(tmp_path, monkeypatch):
    step = _demo_step(monkeypatch, tmp_path)
    cfg = _cfg(tmp_path)
    run_recorded(step, cfg)
    liar = dataclasses.replace(step, outs=("out", "never_written"))
    with pytest.raises(RuntimeError, match=r"finished without writing \['never_written'\]"):
        run_recorded(liar, cfg)
    assert not is_current(liar, cfg) and not is_current(step, cfg), "a failed run forgets the old record too"


def test_fingerprint_is_stable_and_names_the_step(tmp_path, monkeypatch):
    step = _demo_step(monkeypatch, tmp_path)
    cfg = _cfg(tmp_path)
    assert step_fingerprint(step, cfg) == step_fingerprint(step, cfg)
    assert step_fingerprint(step, cfg).startswith("demo-")
    assert step_fingerprint(step, cfg) != step_fingerprint(step, _cfg(tmp_path, data={"max_words": 9}))


def test_the_runners_stage_fingerprint_follows_training_code(tmp_path, monkeypatch):
    """The runner skips retraining a finished stage by its fingerprint: it must see code, as the record does."""
    from deeptalk.training import runner
    from deeptalk.training.stages import get_stage

    cfg = _cfg(tmp_path)
    spec = get_stage("s2a").phases[0]
    loop = runner.loop_config(spec, cfg)
    before = runner.fingerprint(spec, loop, cfg, None, None)
    real = runner.code_digests
    monkeypatch.setattr(runner, "code_digests", lambda *a: {**real(*a), "deeptalk/training/loop.py": "edited"})
    assert runner.fingerprint(spec, loop, cfg, None, None) != before


def test_an_unreadable_record_means_run_again_not_a_crash(tmp_path, monkeypatch):
    step = _demo_step(monkeypatch, tmp_path)
    cfg = _cfg(tmp_path)
    run_recorded(step, cfg)
    (tmp_path / ".deeptalk" / "records" / "demo.json").write_text("{truncated")
    assert not is_current(step, cfg)
    assert run_recorded(step, cfg)[1] is True and is_current(step, cfg)
