"""The state of record through the real Prefect flow and real DVC, with fast stand-in step bodies.

Each test replays one fault of issue 12 exactly as a user met it (a strict-gate run then a default run; a
split-rule run then a default run; a profile switch; a refused package), and the DVC/Prefect agreement test checks
that `dvc status` sees what the flow did (not `slow`: `make test-fast` must not be blind to the shells).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from deeptalk.evaluation.gates import GateFailed, check_gates, write_verdict
from flows.pipeline import deeptalk_pipeline
from deeptalk.steps.package import PackageRefused, read_gate

REPO = Path(__file__).resolve().parents[2]
CALLS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---- stand-in step bodies: each writes its outputs from exactly the config values it declares -------------
def _generate_data(cfg):
    CALLS.append("generate_data")
    _write(cfg.paths.raw / "corpus.json", json.dumps({"max_facts": cfg.data.max_facts}))
    return {}


def _validate_data(cfg):
    CALLS.append("validate_data")
    _write(cfg.paths.validated / "ok", (cfg.paths.raw / "corpus.json").read_text())
    return {}


def _text_pretrain(cfg):
    CALLS.append("text_pretrain")
    _write(cfg.paths.base / "weights.bin", f"base {cfg.training.text_pretrain.steps}")
    return {}


def _profile_experts(cfg):
    CALLS.append("profile_experts")
    _write(cfg.paths.expert_split, json.dumps({"rule": cfg.training.split_rule}))
    _write(cfg.paths.reports / "profile" / "expert_load.csv", "expert,speech_share,text_share\n")
    return {}


def _train_stage(cfg, stage):
    CALLS.append(f"train_{stage}")
    _write(cfg.paths.stage(stage) / "weights.bin", f"{stage} from split {cfg.paths.expert_split.read_text()}")
    return {}


def _evaluate(cfg):
    """Metric 7 % text drop: a 5 % gate fails it, the preset's 40 % passes it (as the real step: verdict, then
    GateFailed)."""
    CALLS.append("evaluate")
    metrics = {"text": {"drop_pct": 7.0}}
    _write(cfg.paths.metrics, json.dumps(metrics))
    _write(cfg.paths.reports / "index.html", "report")
    verdict = check_gates(metrics, cfg.evaluation.gates, only=["max_text_drop_pct"])
    write_verdict(verdict, cfg.paths.reports / "gate.json")
    if not verdict.passed:
        raise GateFailed(verdict)
    return {"passed": True}


def _package(cfg):
    CALLS.append("package")
    verdict = read_gate(cfg.paths.reports)  # the real refusal
    _write(cfg.paths.reports / "package.json", json.dumps({"threshold": verdict["checks"][0]["threshold"]}))
    return {}


FAKES = {"generate_data": _generate_data, "validate_data": _validate_data, "text_pretrain": _text_pretrain,
         "profile_experts": _profile_experts, "train_stage": _train_stage, "evaluate": _evaluate,
         "package": _package}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A fresh clone's pipeline files (dvc.yaml, .dvc/, params.yaml) in a git repo, fake step bodies."""
    for rel in ("params.yaml", "dvc.yaml", "baselines/dvc.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore",
                ".gitignore"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for module, fn in FAKES.items():
        monkeypatch.setitem(sys.modules, f"deeptalk.steps.{module}", types.SimpleNamespace(run=fn))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEEPTALK_PROFILE", raising=False)
    monkeypatch.delenv("DEEPTALK_PROJECT_DIR", raising=False)
    CALLS.clear()
    return tmp_path


def _flow(stages, **kw):
    CALLS.clear()
    return deeptalk_pipeline(params="params.yaml", stages=stages, **kw)


def _dvc_status(root: Path, *targets: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *targets], cwd=root, check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out or "{}")


def test_dvc_and_the_flow_agree_on_what_is_current(project):
    """After the flow, `dvc status` says its steps are up to date; a tampered output is stale for both."""
    _flow(["generate_data", "validate_data"])
    assert CALLS == ["generate_data", "validate_data"]
    assert not set(_dvc_status(project)) & {"generate_data", "validate_data"}

    _flow(["generate_data", "validate_data"])
    assert CALLS == [], "unchanged steps whose outputs are as recorded are skipped"

    (project / "data/raw/corpus.json").write_text("edited by hand")
    assert "generate_data" in _dvc_status(project, "generate_data")
    _flow(["generate_data", "validate_data"])
    assert CALLS == ["generate_data"], "the flow re-runs the step whose outputs changed on disk (validate: same input)"
    assert json.loads((project / "data/raw/corpus.json").read_text()) == {"max_facts": 600}
    assert not set(_dvc_status(project)) & {"generate_data", "validate_data"}


def _inputs(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).mkdir(parents=True, exist_ok=True)


def test_strict_gate_run_then_default_run_reevaluates_and_packages(project):
    """Issue 12: a run with gates {max_text_drop_pct: 5} failed; the next default run must not reuse its verdict."""
    _inputs(project, "data/sequences", "data/raw/tokenizer", "models/base", "models/codec", "models/encoder",
            "models/stages/s3")
    with pytest.raises(GateFailed):
        _flow(["evaluate", "package"], gates={"max_text_drop_pct": 5})
    assert json.loads((project / "reports/gate.json").read_text())["passed"] is False
    summaries = _flow(["evaluate", "package"])
    assert CALLS == ["evaluate", "package"], "evaluate re-runs: its config (the gate) differs from the strict run's"
    assert summaries["evaluate"]["passed"] is True
    assert json.loads((project / "reports/package.json").read_text()) == {"threshold": 40.0}
    assert not set(_dvc_status(project)) & {"evaluate", "package"}


def test_a_package_refusal_is_not_retried(project):
    _inputs(project, "models/stages/s3", "models/codec", "data/raw/tokenizer")
    write_verdict(check_gates({"text": {"drop_pct": 70.0}}, _tiny_gates(), only=["max_text_drop_pct"]),
                  project / "reports/gate.json")
    (project / "reports/metrics.json").write_text("{}")
    with pytest.raises(PackageRefused, match="quality gate failed"):
        _flow(["package"])
    assert CALLS == ["package"], "a refusal is a verdict: retrying it cannot succeed"


def _tiny_gates():
    from deeptalk.evaluation.config import GateThresholds

    return GateThresholds.for_profile("tiny")


@pytest.mark.slow
def test_split_rule_run_then_default_run_restores_the_default_models(project):
    """Issue 12: a `split_rule: fixed:4` run, then a default run said `Cached` while models held fixed:4 weights."""
    chain = ["text_pretrain", "profile_experts", "train_s2a"]
    _inputs(project, "data/sequences", "data/raw/tokenizer", "models/encoder", "models/stages/s1")
    _flow(chain)
    default = (project / "models/stages/s2a/weights.bin").read_text()
    base = (project / "models/base/weights.bin").read_text()

    _flow(chain, split_rule="fixed:4")
    assert CALLS == ["profile_experts", "train_s2a"], "the split rule does not retrain the base"
    assert "fixed:4" in (project / "models/stages/s2a/weights.bin").read_text()

    _flow(chain)
    assert CALLS == ["profile_experts", "train_s2a"], "the default run recomputes what the split run replaced"
    assert (project / "models/stages/s2a/weights.bin").read_text() == default
    assert (project / "models/base/weights.bin").read_text() == base
    assert not set(_dvc_status(project)) & set(chain)


@pytest.mark.slow
def test_profile_switch_reruns_the_data_chain_by_flag_env_and_in_dvc(project):
    """Issue 12: switching the profile re-ran `pack` onward only; `$DEEPTALK_PROFILE` re-ran nothing."""
    _flow(["generate_data", "validate_data"])
    _flow(["generate_data", "validate_data"], profile="small")
    assert CALLS == ["generate_data", "validate_data"]
    assert json.loads((project / "data/raw/corpus.json").read_text()) == {"max_facts": 2000}

    _flow(["generate_data", "validate_data"], profile="tiny")
    assert not set(_dvc_status(project)) & {"generate_data", "validate_data"}
    # DVC: the always-run resolve_config stage rewrites the resolved files from $DEEPTALK_PROFILE
    env = {**os.environ, "DEEPTALK_PROFILE": "small"}
    subprocess.run([sys.executable, "-m", "deeptalk", "resolve-config"], cwd=project, check=True, env=env,
                   capture_output=True)
    assert {"generate_data", "validate_data"} <= set(_dvc_status(project))
    assert "max_facts\": 2000" in (project / ".deeptalk/resolved/generate_data.json").read_text()
