"""The whole pipeline through its real shells: `python -m flows run` (Prefect flow → packaged bento →
served over HTTP), then a gate that fails stops packaging and leaves the packaged model untouched."""

import json

import pytest
import yaml

from tests.e2e._project import FAST_PARAMS, clone_project, run

SHORT = {"steps": 12, "batch_size": 4}
SPEAKS = {"steps": 60, "batch_size": 8}  # enough that the model emits codes before EOA (the check needs /tts audio)
FAST_TRAINING = {"training": {**{stage: SHORT for stage in ("text_pretrain", "s1", "s2b", "plain")},
                              "s2a": SPEAKS, "s3": SPEAKS}}
# a 12-step model is not judged on quality here: the gates are wide open, then one is made unreachable
OPEN_GATES = {"gates": {"max_text_drop_pct": 1e6, "max_asr_wer": 1e6, "max_tts_wer": 1e6,
                        "max_first_audio_ms": 1e7, "max_rtf": 1e6, "min_spoken_over_typed": None,
                        "min_distinct_answers": None, "max_speech_wer_own_text": None}}
# the service check asks at least 10 held-out spoken questions, one per expected answer
SPOKEN = {"data": {**FAST_PARAMS["data"], "counts": {**FAST_PARAMS["data"]["counts"], "aqa": [10, 2, 12]}},
          "evaluation": {"distinct_questions": 10}}


@pytest.mark.slow
def test_run_trains_gates_packages_and_serves(tmp_path):
    project = clone_project(tmp_path / "p", {**FAST_PARAMS, **FAST_TRAINING, **OPEN_GATES, **SPOKEN})
    env = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    out = run(["python", "-m", "flows", "run"], project, extra_env=env, timeout=1500)
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
