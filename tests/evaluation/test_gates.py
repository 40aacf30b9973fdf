import json

import pytest

from deeptalk.evaluation.config import EvalConfig, GateThresholds
from deeptalk.evaluation.gates import GateFailed, check_gates, read_verdict, write_verdict

GOOD = {
    "text": {"drop_pct": 3.0, "qa_acc": 0.9},
    "spoken_qa": {"s2t_acc": 0.5, "s2s_acc": 0.4},
    "asr": {"wer": 0.1},
    "tts": {"wer_vs_truth": 0.2},
    "latency": {"first_audio_ms_median": 300.0, "rtf": 0.5},
}


def _gates(**kw):
    base = dict(max_text_drop_pct=5.5, min_text_qa_acc=0.8, min_spoken_qa_s2t=0.3, min_spoken_qa_s2s=0.25,
                max_asr_wer=0.15, max_tts_wer=0.3, max_first_audio_ms=500.0, max_rtf=1.0)
    return GateThresholds(**{**base, **kw})


def test_all_pass():
    verdict = check_gates(GOOD, _gates())
    assert verdict.passed and verdict.failures == []
    assert {c.status for c in verdict.checks} == {"pass"}


def test_failures_name_metric_and_threshold():
    metrics = json.loads(json.dumps(GOOD))
    metrics["asr"]["wer"] = 0.4
    metrics["text"]["drop_pct"] = 12.25
    verdict = check_gates(metrics, _gates())
    assert not verdict.passed
    assert [(f.metric, f.value, f.threshold) for f in verdict.failures] == [
        ("text.drop_pct", 12.25, 5.5), ("asr.wer", 0.4, 0.15)]
    assert "text.drop_pct = 12.25" in verdict.failures[0].message
    assert "max_text_drop_pct" in verdict.failures[0].message and "<= 5.5" in verdict.failures[0].message
    err = GateFailed(verdict)
    assert "asr.wer = 0.4 violates max_asr_wer: must be <= 0.15" in str(err)
    assert "2 metric(s)" in str(err)


def test_min_gate_boundary_and_missing_metric_fails():
    metrics = {**GOOD, "spoken_qa": {"s2t_acc": 0.3}}  # exactly at threshold passes; s2s missing fails
    verdict = check_gates(metrics, _gates())
    assert [f.metric for f in verdict.failures] == ["spoken_qa.s2s_acc"]
    assert verdict.failures[0].value is None
    assert "missing" in verdict.failures[0].message and ">= 0.25" in verdict.failures[0].message


def test_nan_counts_as_missing_and_disabled_gate_skipped():
    metrics = {**GOOD, "asr": {"wer": float("nan")}}
    verdict = check_gates(metrics, _gates(max_asr_wer=None, min_text_qa_acc=None))
    assert verdict.passed
    skipped = {c.gate for c in verdict.checks if c.status == "skipped"}
    assert skipped == {"max_asr_wer", "min_text_qa_acc"}


def test_verdict_roundtrip(tmp_path):
    metrics = {**GOOD, "latency": {"first_audio_ms_median": 900.0, "rtf": 0.5}}
    verdict = check_gates(metrics, _gates())
    path = write_verdict(verdict, tmp_path / "reports" / "gate.json")
    data = read_verdict(path)
    assert data["passed"] is False
    assert data["failures"] == [{"metric": "latency.first_audio_ms_median", "value": 900.0, "threshold": 500.0,
                                 "message": verdict.failures[0].message}]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="boolean 'passed'"):
        read_verdict(tmp_path / "bad.json")


@pytest.mark.parametrize("profile", ["tiny", "small", "paper"])
def test_profiles_have_gates(profile):
    cfg = EvalConfig.for_profile(profile)
    assert isinstance(cfg.gates, GateThresholds)
    if profile == "paper":
        assert cfg.gates.max_text_drop_pct == 5.5 and cfg.gates.max_first_audio_ms == 500.0
    with pytest.raises(ValueError, match="unknown profile"):
        EvalConfig.for_profile("huge")
