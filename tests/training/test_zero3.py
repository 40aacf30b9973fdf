"""ZeRO-3 end to end on 2 CPU ranks (gloo) through the ``deepspeed`` launcher's ``--module`` form: train the tiny
speech LM's S2a, export the gathered weights, reload them, compare with ZeRO-2, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deeptalk.model.experts import ExpertSplit
from deeptalk.model.speech_lm import SpeechLM
from deeptalk.training.distributed import free_port

ROOT = Path(__file__).resolve().parents[2]
DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")
SPLIT = ExpertSplit([[0, 1, 5], [2, 3, 4, 7]])  # resume_job's split of the two MoE layers


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _deepspeed(root: Path, *extra: str) -> list[str]:
    return [DEEPSPEED, "--num_gpus", "2", "--master_port", str(free_port()), "--module", "tests.training.resume_job",
            str(root), "--steps", "4", "--zero", "zero3", *extra]


def _state(root: Path, stage: str) -> dict[str, torch.Tensor]:
    return SpeechLM.from_pretrained(root / "models" / "stages" / stage).state_dict()


@pytest.mark.slow
def test_zero3_two_ranks_trains_exports_reloads_and_resumes(tmp_path):
    full = tmp_path / "zero3"
    run = subprocess.run(_deepspeed(full), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    # rank 1 never read the checkpoint: it built the architecture and received rank 0's values
    assert "rank 1 builds the model without reading weights" in run.stdout + run.stderr

    init, trained = _state(full, "s1"), _state(full, "s2a")  # the export reloads as an ordinary SpeechLM
    assert init.keys() == trained.keys()
    assert all(v.numel() > 0 for v in trained.values())
    changed = [k for k in init if not torch.equal(init[k], trained[k])]
    assert any("experts" in k for k in changed) and any("embed_tokens" in k for k in changed)
    # frozen in S2a: text-expert rows, attention of the MoE layers, the audio encoder: bit-identical
    for i, layer in enumerate((1, 2)):
        speech_rows = list(SPLIT.speech[i])
        text_rows = [e for e in range(8) if e not in speech_rows]
        for name in ("gate_up_proj", "down_proj"):
            key = f"backbone.model.layers.{layer}.mlp.experts.{name}"
            assert torch.equal(init[key][text_rows], trained[key][text_rows]), key
            assert not torch.equal(init[key][speech_rows], trained[key][speech_rows]), key
        for key in (k for k in init if k.startswith(f"backbone.model.layers.{layer}.self_attn.")):
            assert torch.equal(init[key], trained[key]), key
    assert all(torch.equal(init[k], trained[k]) for k in init if k.startswith("audio_encoder."))

    # the same run under ZeRO-2 (unpartitioned) ends at the same weights, up to reduction order
    zero2 = tmp_path / "zero2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "tests.training.resume_job", str(zero2), "--steps", "4", "--zero", "zero2"]
    subprocess.run(cmd, check=True, cwd=ROOT, env=_env(), capture_output=True, timeout=600)
    reference = _state(zero2, "s2a")
    for key in trained:
        assert torch.allclose(trained[key], reference[key], atol=2e-3, rtol=0), key

    # killed mid-run (both ranks stalled at step 3), relaunched: resumes from step 2 to identical weights
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_deepspeed(killed, "--stall-at", "3"), cwd=ROOT, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while not (killed / "stalled").exists():
            assert proc.poll() is None, "training exited before the stall point"
            assert time.time() < deadline, "training never reached the stall point"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert sorted(p.name for p in (killed / "models" / "checkpoints" / "s2a").iterdir()) == ["step-00000002"]
    again = subprocess.run(_deepspeed(killed), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout + again.stderr
    resumed = _state(killed, "s2a")
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)
