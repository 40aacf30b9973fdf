import base64
import re

import numpy as np

from deeptalk.evaluation.config import GateThresholds
from deeptalk.evaluation.gates import check_gates
from deeptalk.evaluation.report import flatten, render_report, write_report


def _inputs():
    metrics = {"profile": "tiny", "stage": "s3", "text": {"drop_pct": 9.0, "qa_acc": 0.5}, "asr": {"wer": 0.3}}
    verdict = check_gates(metrics, GateThresholds(max_text_drop_pct=5.0, max_asr_wer=0.5, min_spoken_qa_s2t=None,
                                                  max_tts_wer=None, max_first_audio_ms=None, max_rtf=None))
    curves = {"s2a": [{"step": i, "loss": 3.0 - 0.1 * i, "loss_text": 2.0} for i in range(10)]}
    loads = {"s2a": {"speech": np.random.default_rng(0).random((3, 8)), "text": np.ones((3, 8)) / 8}}
    return metrics, verdict, curves, loads


def test_report_is_self_contained_with_plots(tmp_path):
    metrics, verdict, curves, loads = _inputs()
    path = write_report(tmp_path / "index.html", metrics=metrics, verdict=verdict, loss_curves=curves,
                        expert_loads=loads)
    page = path.read_text()
    assert "Quality gate FAILED" in page
    assert "text.drop_pct = 9 violates max_text_drop_pct: must be &lt;= 5" in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 2  # one loss plot, one heatmap figure
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    # nothing refers to an external file or URL
    assert not re.search(r"(src|href)=['\"](?!data:)", page)


def test_report_deterministic_and_escapes():
    metrics, verdict, curves, loads = _inputs()
    metrics = {**metrics, "stage": "<s3>"}
    a = render_report(metrics=metrics, verdict=verdict, loss_curves=curves, expert_loads=loads)
    b = render_report(metrics=metrics, verdict=verdict, loss_curves=curves, expert_loads=loads)
    assert a == b
    assert "&lt;s3&gt;" in a and "<s3>" not in a


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2.5}}, "e": "x", "f": [1]}) == {"a.b": 1, "a.c.d": 2.5, "e": "x"}


def test_report_shows_the_text_drop_parts_with_paired_errors():
    metrics, verdict, _, _ = _inputs()
    metrics["text"] = {"drop_pct": 9.0, "drop_pct_se": 1.25, "drop_pct_se_unpaired": 17.0, "qa_acc": 0.5,
                       "base_qa_acc": 0.6, "drop_pct_qa_acc": 16.7, "drop_pct_qa_acc_se": 2.0,
                       "drop_pct_qa_acc_se_unpaired": 12.0, "answer_ppl": 3.0, "base_answer_ppl": 2.5,
                       "drop_pct_inv_answer_ppl": 16.7, "drop_pct_inv_answer_ppl_se": 1.0, "ppl": 20.0,
                       "base_ppl": 20.0, "drop_pct_inv_ppl": None}
    page = render_report(metrics=metrics, verdict=check_gates(metrics, GateThresholds(max_text_drop_pct=5.0)))
    assert "Text ability vs the base LLM" in page
    assert "9.0 ± 1.2" in page and "(unpaired ± 17.0)" in page  # the drop, paired and unpaired
    assert "16.7 ± 2.0" in page and "16.7 ± 1.0" in page and "not counted" in page  # its parts
    assert "<td>9 ± 1.2</td>" in page  # the gate row carries the error too
