from pathlib import Path

from deeptalk.config import load_config
from deeptalk.steps import StepSpec
from deeptalk.flows.hashing import step_fingerprint


def _step(**kw) -> StepSpec:
    return StepSpec(name="demo", module="demo", deps=("inputs",), outs=("outs",), params=("data",), **kw)


def _cfg(root: Path, **overrides):
    return load_config(root / "params.yaml", profile="tiny", overrides=overrides, root=root)


def test_fingerprint_is_stable_and_follows_inputs(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.txt").write_text("one")
    cfg = _cfg(tmp_path)
    first = step_fingerprint(_step(), cfg)
    assert step_fingerprint(_step(), cfg) == first
    (tmp_path / "inputs" / "__pycache__").mkdir()
    (tmp_path / "inputs" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert step_fingerprint(_step(), cfg) == first, "byte-code caches must not invalidate a step"
    (tmp_path / "inputs" / "a.txt").write_text("two")
    assert step_fingerprint(_step(), cfg) != first


def test_fingerprint_follows_the_step_params_only(tmp_path):
    base = step_fingerprint(_step(), _cfg(tmp_path))
    assert step_fingerprint(_step(), _cfg(tmp_path, data={"max_words": 9})) != base
    assert step_fingerprint(_step(), _cfg(tmp_path, codec={"codebook_size": 512})) == base


def test_fingerprint_follows_step_args(tmp_path):
    cfg = _cfg(tmp_path)
    assert step_fingerprint(_step(args={"stage": "s2a"}), cfg) != step_fingerprint(_step(args={"stage": "s2b"}), cfg)
