"""Resume-after-SIGKILL equivalence on the tiny speech LM (real DeepSpeed engine, ZeRO-2, gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deeptalk.model.speech_lm import SpeechLM

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _job(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.training.resume_job", str(root), *extra]


@pytest.mark.slow
def test_stage_killed_mid_run_resumes_to_identical_weights(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_job(full), check=True, cwd=ROOT, env=_env(), capture_output=True, timeout=600)

    proc = subprocess.Popen(_job(killed, "--stall-at", "3"), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "stalled").exists():
        assert proc.poll() is None, "training exited before the stall point"
        assert time.time() < deadline, "training never reached the stall point"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stage = killed / "models" / "stages" / "s2a"
    assert not (stage / "train_summary.json").exists()

    resumed = subprocess.run(_job(killed), check=True, cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert "resumed from" in resumed.stderr and "step-00000002" in resumed.stderr

    a = SpeechLM.from_pretrained(full / "models" / "stages" / "s2a").state_dict()
    b = SpeechLM.from_pretrained(stage).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the metrics log has each interval once: records after the checkpoint were rewritten, not duplicated
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
