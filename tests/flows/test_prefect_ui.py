"""What the Prefect UI and the closing summary show, from plain data (no Prefect server needed)."""

import json

from tqdm import tqdm

from deeptalk.config import load_config
from flows.prefect_ui import ProgressWatch, active_bars, gate_rows
from flows.summary import MAX_LINES, summary_lines

GATE = {"passed": False, "checks": [
    {"gate": "max_asr_wer", "metric": "asr.wer", "op": "<=", "threshold": 0.5, "value": 0.61234, "status": "fail"},
    {"gate": "min_spoken_qa_s2t", "metric": "spoken_qa.s2t_acc", "op": ">=", "threshold": 0.3, "value": 0.4,
     "status": "pass"},
    {"gate": "max_rtf", "metric": "latency.rtf", "op": "<=", "threshold": None, "value": 0.2, "status": "skipped"},
    {"gate": "max_tts_wer", "metric": "tts.wer_vs_truth", "op": "<=", "threshold": 0.8, "value": None,
     "status": "fail"},
], "failures": [{"message": "asr.wer = 0.6123 violates max_asr_wer: must be <= 0.5"}]}


def test_training_bar_becomes_progress_with_loss_and_eta():
    with tqdm(total=80, desc="s2a", disable=False) as bar:
        bar.update(20)
        bar.set_postfix({"loss": "1.234", "text": "0.5"})
        state = next(b for b in active_bars() if b.desc == "s2a")
    assert (state.n, state.total, state.loss) == (20, 80, 1.234) and state.percent == 25.0
    assert state.describe().startswith("s2a: 20/80 (25 %), loss 1.234")
    assert not any(b.desc == "s2a" for b in active_bars())  # closed bars are gone


def test_progress_watch_without_an_api_does_not_disturb_the_step():
    lines = []

    class Logger:
        def info(self, fmt, *args):
            lines.append(fmt % args)

    with ProgressWatch("train_s2a", Logger(), poll_s=0.01, log_every_s=0.0) as watch:
        with tqdm(total=10, desc="s2a") as bar:
            for _ in range(10):
                bar.update(1)
                bar.set_postfix({"loss": "2.0"})
                __import__("time").sleep(0.01)
    assert watch.last is not None and watch.last.loss == 2.0
    assert lines and lines[-1].startswith("progress: s2a:")


def test_gate_rows_list_every_check_with_value_and_threshold():
    rows = gate_rows(GATE)
    assert rows[0] == {"gate": "max_asr_wer", "metric": "asr.wer", "value": 0.6123, "threshold": "<= 0.5",
                       "result": "fail"}
    assert rows[2]["threshold"] == "off" and rows[3]["value"] == "missing"


def test_closing_summary_is_short_and_says_what_to_do(tmp_path):
    cfg = load_config(tmp_path / "params.yaml", profile="tiny", root=tmp_path)
    cfg.paths.reports.mkdir(parents=True)
    (cfg.paths.reports / "gate.json").write_text(json.dumps(GATE))
    pipeline = {"generate_data": {"utterances": 9}, "train_s3": {"stage": "s3", "phases": [{"steps": 50}]},
                "evaluate": {"passed": True}}
    service = {"ok": False, "questions": 10, "failed_calls": [], "quality": {"gates": GATE},
               "examples": [{"question": "what is the capital of france", "answer": "paris", "correct": True,
                             "heard": "paris"}] * 3}
    lines = summary_lines(cfg, pipeline, service, cfg.paths.reports / "run_summary.json", None)
    text = "\n".join(lines)
    assert len(lines) <= MAX_LINES
    assert "trained train_s3 (50 steps)" in text and "quality gate FAILED: 3 checks (1 off)" in text
    assert "asr.wer" in text and "<= 0.5" in text and "FAILED asr.wer = 0.6123" in text
    assert text.count("'what is the capital of france' → 'paris' · heard: 'paris'") == 3
    assert "index.html" in text and lines[-1].startswith("serve: bentoml serve service:DeepTalk")


def test_gate_artifacts_list_each_check(tmp_path, monkeypatch):
    import flows.prefect_ui as ui

    made = {}
    monkeypatch.setattr(ui, "create_table_artifact", lambda rows, key, description: made.update({key: rows}))
    monkeypatch.setattr(ui, "create_markdown_artifact", lambda text, key, description: made.update({key: text}))
    cfg = load_config(tmp_path / "params.yaml", profile="tiny", root=tmp_path)
    cfg.paths.reports.mkdir(parents=True)
    (cfg.paths.reports / "gate.json").write_text(json.dumps(GATE))
    cfg.paths.metrics.write_text(json.dumps({"asr": {"wer": 0.61234}}))
    ui.publish_artifacts(cfg)
    assert [r["gate"] for r in made["deeptalk-gate-checks"]] == [c["gate"] for c in GATE["checks"]]
    assert "| max_asr_wer | `asr.wer` | 0.6123 | <= 0.5 | fail |" in made["deeptalk-gate"]
    assert made["deeptalk-gate"].startswith("# Gate: FAILED")
    assert made["deeptalk-metrics"] == [{"metric": "asr.wer", "value": 0.61234}]
