"""Checkpoint manifests: hashed once when written, checked by size (always) and sha256 (``verify="full"``)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from deeptalk.training import runner
from deeptalk.training.checkpoints import CheckpointManager, hash_share, verify
from deeptalk.training.config import TrainingConfig
from deeptalk.training.stages import get_stage
from tests.training.helpers import tiny_cfg


class FakeEngine:
    """Writes what DeepSpeed's ``save_checkpoint`` would: one model-states and two optimizer shards."""

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool) -> None:
        out = Path(save_dir) / tag
        out.mkdir(parents=True)
        for i, name in enumerate(["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                  "zero_pp_rank_1_mp_rank_00_optim_states.pt"]):
            (out / name).write_bytes(bytes(range(256)) * (8 + i))


def _save(root: Path, *steps: int, verify_mode: str = "full") -> CheckpointManager:
    manager = CheckpointManager(root, keep=3, verify=verify_mode)
    for step in steps:
        manager.save(step, FakeEngine(), {"data_position": step}, lambda d: _weights(d, step))
    return manager


def _weights(out: Path, step: int) -> None:
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(step.to_bytes(4, "little") * 64)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


SHARD = Path("engine/state/zero_pp_rank_1_mp_rank_00_optim_states.pt")


def test_same_size_corruption_is_caught_by_full_verification_only(tmp_path, caplog):
    _save(tmp_path, 4, 8)
    _flip_a_byte(tmp_path / "step-00000008" / SHARD)
    with caplog.at_level(logging.WARNING, logger="deeptalk.training.checkpoints"):
        found = CheckpointManager(tmp_path, verify="full").latest_valid()
    assert found is not None and found.step == 4
    assert f"checksum mismatch for {SHARD}" in caplog.text
    # "size" trusts the write-time hashes: same-size corruption is the one thing it cannot see
    assert CheckpointManager(tmp_path, verify="size").latest_valid().step == 8


@pytest.mark.parametrize("mode", ["size", "full"])
def test_truncated_file_and_missing_manifest_are_refused_in_every_mode(tmp_path, caplog, mode):
    _save(tmp_path, 4, 8, 12)
    shard = tmp_path / "step-00000012" / SHARD
    shard.write_bytes(shard.read_bytes()[:100])
    (tmp_path / "step-00000008" / "MANIFEST.json").unlink()
    (tmp_path / ".step-00000016.partial").mkdir()
    with caplog.at_level(logging.WARNING, logger="deeptalk.training.checkpoints"):
        found = CheckpointManager(tmp_path, verify=mode).latest_valid()
    assert found is not None and found.step == 4
    text = caplog.text
    assert f"size mismatch for {SHARD} (100 != " in text
    assert "no MANIFEST.json (save did not finish)" in text
    assert "ignoring partial checkpoint" in text


def test_each_rank_hashes_its_share_and_the_shares_cover_every_file(tmp_path):
    _save(tmp_path, 4)
    ckpt = tmp_path / "step-00000004"
    shares = [hash_share(ckpt, (rank, 3)) for rank in range(3)]
    assert sum(len(s) for s in shares) == len(hash_share(ckpt)) == 6
    assert {k: v for s in shares for k, v in s.items()} == hash_share(ckpt)
    _flip_a_byte(ckpt / SHARD)
    problems = [verify(ckpt, hashes=True, share=(rank, 3)) for rank in range(3)]
    assert sorted(p is None for p in problems) == [False, True, True]  # exactly one rank hashes that file
    assert verify(ckpt, hashes=False) is None


def test_verify_mode_is_checked_and_paper_trusts_write_time_hashes():
    with pytest.raises(ValueError, match="verify must be one of"):
        CheckpointManager(Path("unused"), verify="sha")
    with pytest.raises(ValueError, match="verify_checkpoints must be one of"):
        dataclasses.replace(TrainingConfig.for_profile("tiny"), verify_checkpoints="sha")
    assert TrainingConfig.for_profile("paper").verify_checkpoints == "size"
    assert TrainingConfig.for_profile("tiny").verify_checkpoints == "full"


def test_verify_mode_leaves_the_run_fingerprint_alone(tmp_path):
    """Switching how resume checks checkpoints must not orphan them (the fingerprint gates resuming)."""
    cfg = tiny_cfg(tmp_path)
    spec = get_stage("s2a").phases[0]
    loop = runner.loop_config(spec, cfg)
    prints = {runner.fingerprint(spec, dataclasses.replace(loop, verify_checkpoints=mode), cfg, None, None)
              for mode in ("size", "full")}
    assert len(prints) == 1
