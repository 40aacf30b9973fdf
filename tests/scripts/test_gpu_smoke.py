"""``scripts/gpu_smoke.py`` (``make gpu-smoke``) on CPU: the same script a lent GPU runs, here with 2 CPU ranks
through the deepspeed launcher's ``--module`` form (the README's multi-GPU command), fp32, tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_smoke.py"


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                               "MASTER_PORT")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_cuda_requested_without_a_gpu_exits_non_zero(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no CUDA device is visible" in proc.stderr


@pytest.mark.slow
def test_smoke_runs_the_paper_path_on_two_cpu_ranks(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--ranks", "2", "--steps", "2", "--clips", "2",
           "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["first_audio_ms_p90"] >= printed["first_audio_ms_p50"] > 0
    assert printed["train_tokens_per_s"] > 0
    result = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert set(result["training"]) == {"s1", "s2a", "s2b", "s3"}
    assert all(t["steps"] == 2 for t in result["training"].values())
    log = (tmp_path / "project" / "smoke.log").read_text()
    assert "--num_gpus 2" in log and "--module deeptalk.training --stage s2a" in log
    # by default the paper's DeepSpeed config: ZeRO-2, optimizer offloaded to DeepSpeed's CPU Adam
    assert printed["zero"] == "zero2_offload" and "DeepSpeed CPU Adam (ZeRO offload)" in log
