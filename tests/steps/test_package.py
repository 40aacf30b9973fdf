"""The package step: gate check, verified store entry, previous model untouched, bento build (slow)."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from deeptalk.config import load_config
from deeptalk.evaluation.gates import model_digest
from deeptalk.inference.engine import Engine
from deeptalk.steps import package
from tests.inference.conftest import build_package


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_package(tmp_path_factory.mktemp("assets"))


@pytest.fixture
def bentoml_home(tmp_path, monkeypatch):
    """A private BentoML home: env for subprocesses, patched stores for this process (they are cached)."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = tmp_path / "bentoml"
    for sub in ("models", "bentos", "tmp", "envs"):
        (home / sub).mkdir(parents=True)
    monkeypatch.setenv("BENTOML_HOME", str(home))
    with (
        BentoMLContainer.bentoml_home.patch(str(home)),
        BentoMLContainer.model_store.patch(ModelStore(str(home / "models"))),
        BentoMLContainer.bento_store.patch(BentoStore(str(home / "bentos"))),
        BentoMLContainer.tmp_bento_store.patch(BentoStore(str(home / "tmp"))),
    ):
        yield home


@pytest.fixture
def project(tmp_path, assets, bentoml_home):
    cfg = load_config(
        tmp_path / "params.yaml",
        profile="tiny",
        root=tmp_path,
        overrides={"service": {"max_upload_seconds": 3.0}},
    )
    shutil.copytree(assets / "model", cfg.paths.stage("s3"))
    shutil.copytree(assets / "codec", cfg.paths.codec)
    shutil.copytree(assets / "tokenizer", cfg.paths.raw / "tokenizer")
    cfg.paths.reports.mkdir(parents=True)
    cfg.paths.metrics.write_text(json.dumps({"asr": {"wer": 0.5}, "latency": {"rtf": 0.1}}))
    return cfg


def gate(cfg, passed: bool, stage: str = "s3") -> None:
    """A verdict as the evaluate step writes it: about the weights now in models/stages/<stage>."""
    failures = (
        []
        if passed
        else [{"metric": "asr.wer", "value": 0.9, "threshold": 0.5, "message": "asr.wer 0.9 > 0.5"}]
    )
    model = {"stage": stage, "sha256": model_digest(cfg.paths.stage(stage))}
    (cfg.paths.reports / "gate.json").write_text(json.dumps({"passed": passed, "model": model, "failures": failures}))


def stored_models():
    import bentoml

    return sorted(str(m.tag) for m in bentoml.models.list() if m.tag.name == "deeptalk")


def test_refuses_without_or_with_a_failed_gate(project):
    with pytest.raises(package.PackageRefused, match="no gate verdict"):
        package.run(project, build=False)
    gate(project, passed=False)
    with pytest.raises(package.PackageRefused, match="asr.wer 0.9 > 0.5"):
        package.run(project, build=False)
    assert stored_models() == [] and not (project.paths.reports / "package.json").exists()


def test_stores_a_loadable_model_with_metadata_and_keeps_the_previous_one_on_failure(project):
    import bentoml

    gate(project, passed=True)
    summary = package.run(project, build=False)
    first = summary["model_tag"]
    model = bentoml.models.get("deeptalk:latest")
    assert str(model.tag) == first and model.info.metadata["metrics"]["asr"]["wer"] == 0.5
    assert json.loads((project.paths.reports / "package.json").read_text())["model_tag"] == first
    engine = Engine.load(model.path, project.service)
    assert engine.voices == ("joe", "slt")

    (project.paths.codec / "codec.safetensors").write_bytes(b"garbage")  # a broken asset must not be stored
    with pytest.raises(ValueError, match="unreadable"):
        package.run(project, build=False)
    assert stored_models() == [first] and str(bentoml.models.get("deeptalk:latest").tag) == first

    gate(project, passed=False)  # a later failed gate leaves the packaged model as it was
    with pytest.raises(package.PackageRefused):
        package.run(project, build=False)
    assert stored_models() == [first]


def test_stale_package_retrained_model_behind_an_old_pass_is_refused(project):
    """Issue 12: `--stages train_s3,package` retrained S3 after the gate passed; package must not ship it."""
    gate(project, passed=True)
    weights = next(p for p in project.paths.stage("s3").rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"retrain!")  # new weights, same files
    with pytest.raises(package.PackageRefused, match="changed since the gate judged it"):
        package.run(project, build=False)
    assert stored_models() == [] and not (project.paths.reports / "package.json").exists()


def test_package_ships_the_evaluated_stage_and_refuses_a_verdict_about_another(project):
    shutil.copytree(project.paths.stage("s3"), project.paths.stage("s2b"))
    gate(project, passed=True, stage="s2b")
    with pytest.raises(package.PackageRefused, match="judged stage 's2b', not 's3'"):
        package.run(project, build=False)
    s2b = dataclasses.replace(project, evaluation=dataclasses.replace(project.evaluation, stage="s2b"))
    summary = package.run(s2b, build=False)
    assert summary["stage"] == "s2b" and summary["model_sha256"] == model_digest(project.paths.stage("s2b"))


def test_a_verdict_that_names_no_weights_is_refused(project):
    (project.paths.reports / "gate.json").write_text(json.dumps({"passed": True, "failures": []}))
    with pytest.raises(package.PackageRefused, match="does not name the weights"):
        package.run(project, build=False)


@pytest.mark.slow
def test_bento_builds_from_bentofile(project):
    import bentoml

    gate(project, passed=True)
    root = Path(__file__).resolve().parents[2]
    summary = package.package_model(project, build=True, project_root=root)
    bento = bentoml.bentos.get(summary["bento_tag"])
    assert [str(m.tag) for m in bento.info.all_models] == [summary["model_tag"]]
    files = {p.relative_to(bento.path).as_posix() for p in Path(bento.path).rglob("*") if p.is_file()}
    assert "src/service.py" in files and "src/static/index.html" in files
    assert any(f.startswith("src/deeptalk/inference/") for f in files)
