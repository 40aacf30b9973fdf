"""The whole pipeline through its real shells: `python -m flows run` (Prefect flow → packaged bento → served
over HTTP; the session's shared trained project, tests/e2e/conftest.py), then a gate that fails stops packaging,
leaves the packaged model untouched and reads as a short verdict; DVC finds what the flow computed current."""

import json

import pytest
import yaml

from tests.e2e._project import copy_project, repo_project, run, tree_hashes
from tests.e2e.conftest import SHARED_PARAMS
from tests.e2e.test_reproducibility import DETERMINISTIC_OUTS, ran, shell, status_stages


@pytest.mark.slow
def test_run_trains_gates_packages_and_serves(trained_project, tmp_path):
    project, out, env = trained_project
    summary = json.loads((project / "reports/run_summary.json").read_text())
    closing = out[out.index("── DeepTalk tiny"):].splitlines()
    assert len(closing) <= 30 and "quality gate PASSED" in "\n".join(closing), out[-3000:]
    assert "Skipping registering function" not in out and "Writing model shards" not in out
    assert summary["service"]["ok"], summary["service"]
    assert summary["service"]["questions"] == 10 and not summary["service"]["failed_calls"]
    assert len(summary["service"]["quality"]["examples"]) == 3
    assert summary["service"]["tts"]["audio_seconds"] > 0
    for step in ("generate_data", "train_s3", "evaluate", "package"):
        assert step in summary["pipeline"]
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert {"text", "spoken_qa", "asr", "tts", "latency"} <= metrics.keys()
    assert json.loads((project / "reports/gate.json").read_text())["passed"] is True
    packaged = (project / "reports/package.json").read_bytes()

    project = copy_project(project, tmp_path / "strict")  # the shared project stays as the flow left it
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["gates"]["max_text_drop_pct"] = -1000.0  # unreachable: the model would have to beat the base 10x
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = run(["python", "-m", "flows.pipeline", "--stages", "evaluate,package"], project, extra_env=env,
                 check=False)
    assert "text.drop_pct" in failed and "-1000" in failed, failed[-3000:]
    verdict = failed[failed.index("QUALITY GATE FAILED"):].strip().splitlines()
    assert len(verdict) <= 15 and "Traceback" not in failed, failed[-3000:]  # the traceback is in run.log
    assert verdict[-1].endswith("reports/run.log") and "Traceback" in (project / "reports/run.log").read_text()
    assert json.loads((project / "reports/gate.json").read_text())["passed"] is False
    assert (project / "reports/package.json").read_bytes() == packaged, "a failed gate must not repackage"


@pytest.mark.slow
def test_after_the_flow_dvc_reports_the_chain_up_to_date_and_reproduces_nothing(trained_project, tmp_path):
    """The project trained by `python -m flows run` (tests/e2e/conftest.py): DVC agrees it is current,
    and a DVC-only project with the same parameters computes byte-identical data."""
    project, _, env = trained_project
    assert status_stages(shell("dvc status dvc.yaml", project, env)) == {"resolve_config"}
    again = shell("dvc repro", project, env)
    assert ran(again) == {"resolve_config"}, again[-3000:]

    dvc_project = repo_project(tmp_path / "dvc", SHARED_PARAMS)
    shell("dvc repro pack", dvc_project, env)
    assert tree_hashes(project, *DETERMINISTIC_OUTS) == tree_hashes(dvc_project, *DETERMINISTIC_OUTS)
