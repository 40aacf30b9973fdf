"""The comparison's orchestration and table, with training and evaluation replaced by recorders (the real
stage runner and evaluation are tested in their own modules; a real small-profile run takes about an hour)."""

import json

from deeptalk.config import load_config
from deeptalk.evaluation import compare


def _metrics(drop, s2t=0.1):
    return {"text": {"drop_pct": drop, "qa_acc": 0.5, "answer_ppl": 7.0, "ppl": 3.0}, "spoken_qa": {"s2t_acc": s2t, "s2s_acc": 0.0},
            "asr": {"wer": 0.9}, "tts": {"wer_vs_truth": 1.0, "wer_vs_generated_text": None}}


def test_claim_statement():
    held = compare.claim({"deeptalk": {"metrics": _metrics(5.0)}, "plain": {"metrics": _metrics(30.0)}})
    assert held["reproduced"] is True and "reproduces" in held["statement"]
    failed = compare.claim({"deeptalk": {"metrics": _metrics(40.0)}, "plain": {"metrics": _metrics(30.0)}})
    assert failed["reproduced"] is False and "does not reproduce" in failed["statement"]
    assert compare.claim({"deeptalk": {"metrics": _metrics(5.0)}})["reproduced"] is None


def test_run_compare_orchestration(tmp_path, monkeypatch):
    cfg = load_config(tmp_path / "params.yaml", profile="tiny", root=tmp_path,
                      overrides={"training": {"baselines": ["plain", "strict"]}})
    calls = []
    monkeypatch.setattr(compare, "run_prerequisites", lambda work: calls.append(("prereq", work.paths.root)) or {})
    monkeypatch.setattr("deeptalk.training.runner.run_stage", lambda name, work: calls.append(("train", name)))
    monkeypatch.setattr(compare, "phase_summaries", lambda work, s: {p: {"wall_s": 10.0} for p in s.stages})
    monkeypatch.setattr(compare, "trainable_parameters",
                        lambda work, s: {"by_phase": {}, "max": 1000 * len(s.stages), "total_params": 5000})
    drops = {"deeptalk": 4.0, "plain": 25.0, "strict": 1.0}
    monkeypatch.setattr(compare, "evaluate_system", lambda work, s, shared: _metrics(drops[s.name]))
    monkeypatch.setattr("deeptalk.evaluation.heldout.heldout_for", lambda work: "held")
    monkeypatch.setattr("deeptalk.evaluation.text_ability.load_tokenizer", lambda work: "tok")
    base = type("B", (), {})()
    monkeypatch.setattr("deeptalk.evaluation.suite.base_text_ability", lambda work, held, tok: base)
    monkeypatch.setattr("deeptalk.evaluation.suite.text_ability_of", lambda path, work, held, tok: base)
    monkeypatch.setattr("deeptalk.evaluation.suite.text_metrics", lambda b, m, n: {"drop_pct": 0.0})
    monkeypatch.setattr("deeptalk.evaluation.asr_scorer.AsrScorer", lambda: "scorer")
    from deeptalk.model.experts import ExpertSplit

    ExpertSplit([[0, 1], [2]]).to_json(tmp_path / "artifacts" / "compare" / "tiny" / "models" / "expert_split.json")

    result = compare.run_compare(cfg)
    assert calls == [("prereq", tmp_path / "artifacts" / "compare" / "tiny"),
                     ("train", "s2a"), ("train", "s2b"), ("train", "s3"), ("train", "plain"), ("train", "strict")]
    assert list(result["systems"]) == ["deeptalk", "plain", "strict"]
    assert result["systems"]["deeptalk"]["train_wall_s"] == 30.0
    assert result["claim"]["reproduced"] is True
    assert result["expert_split"]["speech_experts_per_layer"] == [2, 1]
    saved = json.loads((tmp_path / "reports" / "compare.json").read_text())
    assert saved["claim"] == result["claim"]
    md = (tmp_path / "reports" / "compare.md").read_text()
    # spoken/typed, distinct answers and answer-speech WER are not in these stand-in metrics: "—"
    assert ("| deeptalk | 4.0 | 0.500 | 7.00 | 3.00 | 0.100 | — | — | 0.000 | — | 0.900 | 1.000 | — | "
            "3,000 / 5,000 | 30 |") in md
    assert "| (base) | 0.0 |" in md and "speech experts per MoE layer [2, 1]" in md and "`python -m deeptalk compare --profile tiny`" in md
    page = (tmp_path / "reports" / "compare.html").read_text()
    assert "reproduces" in page and "<td>plain</td>" in page


def test_prerequisite_fingerprint_chains_settings(tmp_path):
    from deeptalk.steps import get_step

    cfg = load_config(tmp_path / "params.yaml", profile="tiny", root=tmp_path)
    other = load_config(tmp_path / "params.yaml", profile="tiny", root=tmp_path, overrides={"seed": 5})
    step = get_step("text_pretrain")
    fp = compare.step_fingerprint(step, cfg, "prev")
    assert fp == compare.step_fingerprint(step, cfg, "prev")
    assert fp != compare.step_fingerprint(step, cfg, "other-prev")
    assert fp != compare.step_fingerprint(step, other, "prev")
