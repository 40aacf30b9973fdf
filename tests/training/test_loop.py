"""The generic DeepSpeed loop: resume after SIGKILL, corrupt checkpoints, schedule, config loading."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deeptalk.training.checkpoints import CheckpointManager
from deeptalk.training.loop import LoopConfig, deepspeed_config, lr_lambda
from tests.training import toy

ROOT = Path(__file__).resolve().parents[2]


def _script(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.training.toy", str(out), "--steps", "10", "--every", "4", *extra]


def _env() -> dict:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # each child is its own single-process group
    return env


def _weights(out: Path) -> dict:
    return torch.load(out / "model" / "weights.pt")


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_script(full), check=True, cwd=ROOT, env=_env(), capture_output=True, timeout=300)

    proc = subprocess.Popen(_script(killed, "--stall-at", "6"), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "stalled").exists():
        assert proc.poll() is None, "toy run exited before reaching the stall point"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / "model" / "weights.pt").exists()
    assert [s for s, _ in CheckpointManager(killed / "checkpoints").complete()] == [4]

    done = subprocess.run(_script(killed), check=True, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert "resumed from" in done.stderr
    a, b = _weights(full), _weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_corrupt_and_partial_checkpoints_are_skipped(tmp_path, caplog):
    toy.run(tmp_path, steps=8, every=4)
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert [s for s, _ in manager.complete()] == [8, 4]
    newest = tmp_path / "checkpoints" / "step-00000008" / "rng.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    (tmp_path / "checkpoints" / ".step-00000012.partial").mkdir()
    with caplog.at_level(logging.WARNING, logger="deeptalk.training.checkpoints"):
        found = manager.latest_valid()
    assert found is not None and found.step == 4
    text = caplog.text
    assert "skipping corrupt checkpoint" in text and "checksum mismatch for rng.pt" in text
    assert "partial checkpoint" in text


def test_checkpoint_without_manifest_is_not_loaded(tmp_path):
    toy.run(tmp_path, steps=4, every=4)
    (tmp_path / "checkpoints" / "step-00000004" / "MANIFEST.json").unlink()
    assert CheckpointManager(tmp_path / "checkpoints").latest_valid() is None


def test_metrics_log_and_plots_written(tmp_path):
    toy.run(tmp_path, steps=6, every=3)
    lines = (tmp_path / "model" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # log_every=2
    loss_csv = (tmp_path / "model" / "plots" / "loss.csv").read_text().splitlines()
    assert loss_csv[0].split(",")[:3] == ["step", "lr", "loss"] and len(loss_csv) == 4
    summary = (tmp_path / "model" / "train_summary.json").read_text()
    assert "peak_rss_mb" in summary and "tokens_per_s" in summary


def test_lr_schedule_warmup_then_cosine():
    total = 100
    values = [lr_lambda(s, total, 0.03, "cosine") for s in range(total)]
    assert values[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(b <= a for a, b in zip(values[2:], values[3:]))
    assert values[-1] < 0.01
    assert lr_lambda(50, total, 0.03, "constant") == 1.0


def test_deepspeed_config_fills_batch_and_rejects_unknown_names():
    loop = LoopConfig(steps=10, batch_size=3, lr=1e-3, deepspeed_config="zero2_offload", bf16=True)
    cfg = deepspeed_config(loop, world_size=2, device=torch.device("cpu"))
    assert cfg["train_batch_size"] == 6 and cfg["train_micro_batch_size_per_gpu"] == 3
    assert cfg["bf16"] == {"enabled": False}  # bf16 is a GPU-only switch
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"  # kept on CPU ranks (test_optimizer)
    with pytest.raises(ValueError, match="not found"):
        deepspeed_config(LoopConfig(steps=1, batch_size=1, lr=1e-3, deepspeed_config="nope"), 1,
                         torch.device("cpu"))


@pytest.mark.slow
def test_two_rank_zero2_run_checkpoints_every_shard_and_resumes(tmp_path):
    out = tmp_path / "tt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tests.training.toy",
           str(out), "--steps", "6", "--every", "3"]
    subprocess.run(cmd, check=True, cwd=ROOT, env=_env(), capture_output=True, timeout=300)
    first = _weights(out)
    shards = sorted(p.name for p in (out / "checkpoints" / "step-00000006" / "engine" / "state").iterdir())
    assert shards == ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                      "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-00000006")
    (out / "model" / "weights.pt").unlink()
    done = subprocess.run(cmd, check=True, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert "resumed from" in done.stderr
    again = _weights(out)
    assert all(torch.equal(first[k], again[k]) for k in first)
