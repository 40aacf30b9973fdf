"""The deployments are declared once (prefect.yaml): `make ui` registers exactly those, by module path, with
their pools, parameters and concurrency limits, as `prefect deploy --all` does from the same file."""

from __future__ import annotations

import yaml
from prefect.deployments.runner import RunnerDeployment

from flows import deploy


def _applied(monkeypatch, profile="tiny") -> dict[str, tuple[RunnerDeployment, str]]:
    applied = {}
    monkeypatch.setattr(deploy, "ensure_pools", lambda: None)
    monkeypatch.setattr(RunnerDeployment, "apply",
                        lambda self, work_pool_name=None, **kw: applied.setdefault(self.name, (self, work_pool_name)))
    deploy.deploy_all(profile)
    return applied


def test_make_ui_registers_the_deployments_of_prefect_yaml(monkeypatch):
    declared = yaml.safe_load(deploy.PREFECT_YAML.read_text())["deployments"]
    applied = _applied(monkeypatch)
    assert set(applied) == {d["name"] for d in declared} == {"deeptalk", "gpu", "compare"}
    for spec in declared:
        registered, pool = applied[spec["name"]]
        assert registered.entrypoint == spec["entrypoint"], "module path: the worker imports its own installed flows"
        assert pool == spec["work_pool"]["name"]
        limit = registered.concurrency_limit
        assert (getattr(limit, "limit", limit)) == spec.get("concurrency_limit")
        assert registered.parameters == spec["parameters"]
    assert applied["compare"][0].flow_name == "deeptalk-compare"
    assert applied["deeptalk"][0].flow_name == "deeptalk-pipeline"


def test_the_ui_profile_reaches_the_pipeline_deployment_only(monkeypatch):
    applied = _applied(monkeypatch, profile="small")
    assert applied["deeptalk"][0].parameters == {"profile": "small"}
    assert applied["compare"][0].parameters == {"profile": "small"} and applied["gpu"][0].parameters == {}


def test_a_deployment_prefect_cannot_read_is_refused(tmp_path):
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments:\n  - name: x\n    concurrency_limit: many\n")
    import pytest

    with pytest.raises(Exception, match="concurrency_limit"):
        deploy.deployments(bad)
