"""The evaluate step end to end on a miniature pipeline output (random models, real Engine, codec, scorer)."""

import json
import re

import pytest

from deeptalk.config import load_config
from deeptalk.evaluation.gates import GateFailed
from deeptalk.steps import evaluate
from tests.evaluation._pipeline import mini_pipeline

pytestmark = pytest.mark.slow

FAST = {"max_audio_frames": 10, "max_latency": 1, "max_spoken_qa": 2, "distinct_questions": 2, "max_asr": 1,
        "max_tts": 1}
# a random model's answers are not meant to be judged by these (test_collapsed_model does that)
NEW_SPEECH_GATES_OFF = {"min_spoken_over_typed": None, "min_distinct_answers": None,
                        "max_speech_wer_own_text": None}


def _config(root, gates):
    return load_config(root / "params.yaml", profile="tiny", root=root,
                       overrides={"evaluation": {**FAST, "gates": gates}})


def test_evaluate_writes_outputs_then_fails_the_gate(tmp_path):
    root = mini_pipeline()
    cfg = _config(root, {"min_spoken_qa_s2t": 0.9, "max_asr_wer": 100.0, "max_tts_wer": 100.0,
                         "max_text_drop_pct": 50.0, **NEW_SPEECH_GATES_OFF})
    package = root / "artifacts" / "packaged.txt"  # stands in for an earlier packaged model
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_text("previous model")
    with pytest.raises(GateFailed) as err:
        evaluate.run(cfg)
    assert "spoken_qa.s2t_acc = 0 violates min_spoken_qa_s2t: must be >= 0.9" in str(err.value)
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["stage"] == "s3" and metrics["profile"] == "tiny"
    for key in ("qa_acc", "answer_ppl", "base_answer_ppl", "drop_pct_inv_answer_ppl"):
        assert isinstance(metrics["text"][key], float)
    assert set(metrics) >= {"text", "spoken_qa", "asr", "tts", "latency"}
    assert metrics["spoken_qa"]["n"] == 2 and metrics["latency"]["n"] == 1
    new_keys = {"typed_acc", "s2t_over_typed", "distinct_answers", "speech_wer_own_text"}
    assert new_keys <= metrics["spoken_qa"].keys()
    assert metrics["spoken_qa"]["n_questions"] == 2 and 1 <= metrics["spoken_qa"]["distinct_answers"] <= 2
    gate = json.loads((root / "reports" / "gate.json").read_text())
    assert gate["passed"] is False and [f["metric"] for f in gate["failures"]] == ["spoken_qa.s2t_acc"]
    page = (root / "reports" / "index.html").read_text()
    assert "Quality gate FAILED" in page and "min_spoken_qa_s2t" in page
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # self-contained
    assert package.read_text() == "previous model"


def test_evaluate_passes_with_reachable_gates():
    root = mini_pipeline()
    cfg = _config(root, {"max_text_drop_pct": None, "min_spoken_qa_s2t": 0.0, "max_asr_wer": None,
                         "max_tts_wer": None, "max_first_audio_ms": 600_000.0, "max_rtf": None,
                         **NEW_SPEECH_GATES_OFF})
    summary = evaluate.run(cfg)
    assert summary["passed"] is True and "text.answer_ppl" in summary["metrics"]
    assert json.loads((root / "reports" / "gate.json").read_text())["passed"] is True
