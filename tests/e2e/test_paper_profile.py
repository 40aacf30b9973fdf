"""The paper profile end to end on CPU, on mini checkpoints in the real on-disk layouts (deeptalk.testing).

A user's project: the three checkpoints where the paper preset looks for them (``checkpoints/``), the corpus as
manifests on S3 (moto), and a ``params.yaml`` that says ``profile: paper`` and overrides only what the minis and
a CPU need (the mini Whisper's geometry, tiny budgets, small evaluation caps, open gates). ``python -m deeptalk
run`` then imports, validates, encodes, packs, imports the LLM (text baseline), trains S1 → S2a → S2b → S3 a few
steps, evaluates, packages, serves and asks it spoken questions over HTTP; DVC then finds the chain up to date;
the same import from a local directory through the CLI gives the same manifests.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from deeptalk.data.config import DataConfig
from deeptalk.data.corpus import build_corpus
from deeptalk.testing.mini_checkpoints import build_all
from tests._moto import CREDENTIALS, moto_s3
from tests.e2e._project import clone_project, run
from tests.e2e.test_reproducibility import ran, status_stages

FEW = {"steps": 3, "batch_size": 2}
OPEN_GATES = {k: None for k in ("max_text_drop_pct", "min_spoken_qa_s2t", "min_spoken_over_typed",
                                "min_distinct_answers", "min_spoken_qa_s2s", "max_speech_wer_own_text",
                                "max_asr_wer", "max_tts_wer", "max_first_audio_ms", "max_rtf")}


def _user_corpus(dest):
    """Manifests + wavs as a user would upload them (no tokenizer: the LLM's comes from its checkpoint).
    12 held-out spoken questions: the service check asks at least 10."""
    counts = {"asr": (8, 2, 3), "tts": (4, 1, 2), "aqa": (8, 2, 12), "tqa": (6, 2, 4), "rqa": (6, 2, 3)}
    build_corpus(DataConfig(seed=0, counts=counts, max_facts=80, workers=2), dest)
    shutil.rmtree(dest / "tokenizer")
    return dest


def _upload(root, endpoint, monkeypatch, bucket="corpus"):
    import s3fs

    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(bucket)
    fs.put(str(root), f"{bucket}/manifests", recursive=True)
    s3fs.S3FileSystem.clear_instance_cache()
    return f"s3://{bucket}/manifests"


@pytest.mark.slow
def test_paper_profile_runs_end_to_end_on_mini_checkpoints(tmp_path, monkeypatch):
    source = _user_corpus(tmp_path / "corpus")
    project = tmp_path / "project"
    project.mkdir()
    clone_project(project)
    # DeepSeek-V2-Lite-Chat/, whisper-medium/, snac_24khz/ and the scorer whisper-large-v3/ (transformers format)
    minis = build_all(project / "checkpoints")
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"]):
        subprocess.run(["git", *cmd], cwd=project, check=True, capture_output=True)

    with moto_s3() as endpoint:
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "BENTOML_HOME": str(tmp_path / "bentoml")}
        params = {
            "profile": "paper",
            "data": {"import_source": _upload(source, endpoint, monkeypatch)},
            "audio_input": minis.whisper_geometry(),  # the mini Whisper is medium's shape at width 64
            "training": {**{stage: dict(FEW) for stage in ("s1", "s2a", "s2b", "s3")},
                         "profile_batches": 2, "eval_batches": 2, "checkpoint_every": 2},
            "evaluation": {"max_text_qa": 4, "max_ppl_samples": 4, "max_spoken_qa": 10, "distinct_questions": 10,
                           "max_asr": 2, "max_tts": 2, "max_latency": 1, "max_answer_tokens": 4,
                           "max_audio_frames": 8},
            "gates": OPEN_GATES,
            "service": {"max_steps": 24},
        }
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["python", "-m", "flows", "run"], project, extra_env=env, timeout=1500)
        # the flow recorded every step in dvc.lock: DVC finds the paper chain up to date and reproduces nothing
        status = run(["dvc", "status", "dvc.yaml"], project, extra_env=env)
        assert status_stages(status) == {"resolve_config"}, status
        again = run(["dvc", "repro"], project, extra_env=env)
        assert ran(again) == {"resolve_config"}, again[-3000:]

    summary = json.loads((project / "reports/run_summary.json").read_text())
    assert "── DeepTalk paper" in out, out[-3000:]
    service = summary["service"]
    assert service["ready"] and not service["failed_calls"] and service["questions"] == 10, service
    assert service["tts"]["ok"] and service["tts"]["audio_seconds"] > 0
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["profile"] == "paper" and {"text", "spoken_qa", "asr", "tts", "latency"} <= metrics.keys()
    assert json.loads((project / "reports/gate.json").read_text())["passed"] is True

    # the layout's text block is the checkpoint's 512 rows (its tokenizer has 418 tokens), prompts in its template
    layout = json.loads((project / "data/sequences/layout.json").read_text())
    assert layout["text_vocab_size"] == 512 and layout["chat"]["eot"] == 417
    # the import keeps DeepSeek's trained head: text argmaxes agree with the source; its baseline is the source's
    baseline = json.loads((project / "models/base/text_baseline.json").read_text())
    assert baseline["head"] == "untied" and baseline["source_agreement"]["argmax_agreement"] >= 0.98
    assert baseline["baseline_model"].startswith("source checkpoint") and "text_qa" in baseline
    conversion = json.loads((project / "models/encoder/conversion.json").read_text())
    assert conversion == {"source": str(project / "checkpoints/whisper-medium"), "format": "transformers"}

    # the same corpus from a local directory, through the CLI: the same manifests
    s3_utts = pd.read_parquet(project / "data/raw/utterances.parquet")
    params["data"]["import_source"] = str(source)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["python", "-m", "deeptalk", "step", "generate_data"], project)
    assert pd.read_parquet(project / "data/raw/utterances.parquet").equals(s3_utts)

    # the reference's tied head damages the import, but the baseline stays the source model's
    params["model"] = {"head": "tied"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["python", "-m", "deeptalk", "step", "text_pretrain"], project)
    tied = json.loads((project / "models/base/text_baseline.json").read_text())
    assert tied["head"] == "tied" and tied["import_agreement"]["argmax_agreement"] < 0.1
    assert tied["text_qa"]["answer_ppl"] == pytest.approx(baseline["text_qa"]["answer_ppl"], rel=1e-3)
