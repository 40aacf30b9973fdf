"""Runs of one project do not collide: the UI deployment queues them, a command-line run finds the lock taken."""

import pytest
from prefect.deployments.runner import RunnerDeployment

from flows import deploy
from flows.pipeline import project_lock


def test_the_pipeline_deployment_runs_one_flow_run_at_a_time(monkeypatch):
    applied = []
    monkeypatch.setattr(deploy, "ensure_pools", lambda: None)
    monkeypatch.setattr(RunnerDeployment, "apply", lambda self, **kw: applied.append(self) or "id")
    deploy.deploy_all("tiny")
    limits = {d.name: getattr(d.concurrency_limit, "limit", d.concurrency_limit) for d in applied}
    assert limits["deeptalk"] == 1 and limits["gpu"] is None  # single steps are sent by the one pipeline run


def test_a_second_run_of_the_project_stops_at_once_naming_the_first(tmp_path):
    with project_lock(tmp_path):
        with pytest.raises(RuntimeError, match=r"another pipeline run holds .*run.lock \(pid \d+ since"):
            with project_lock(tmp_path):
                pass
    with project_lock(tmp_path):  # released when the first run ends, also after a failure
        pass
