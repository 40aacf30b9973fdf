"""Process-group environment handling for single-process and launcher runs."""

from __future__ import annotations

import pytest

from deeptalk.training import distributed

KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def test_local_rank_from_the_deepspeed_launcher():
    assert distributed.parse_local_rank(["--stage", "s2a", "--local_rank=3"]) == 3
    assert distributed.parse_local_rank(["--local-rank", "1"]) == 1
    assert distributed.parse_local_rank(["--stage", "s2a"]) is None


def test_single_process_fills_its_ranks_but_invents_no_rendezvous(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    assert distributed.ensure_env() is True
    import os

    assert [os.environ[k] for k in KEYS[:3]] == ["0", "1", "0"]
    # a port picked here would be inherited by every child process as if a launcher had set it
    assert "MASTER_ADDR" not in os.environ and "MASTER_PORT" not in os.environ
    assert distributed.ensure_env() is True  # a second stage in the same process is still a single process


def test_launcher_env_is_kept_and_incomplete_multiprocess_env_rejected(monkeypatch):
    for key, value in zip(KEYS, ("1", "2", "1", "10.0.0.1", "29500")):
        monkeypatch.setenv(key, value)
    distributed.ensure_env()
    import os

    assert os.environ["MASTER_ADDR"] == "10.0.0.1" and os.environ["RANK"] == "1"
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(ValueError, match="use a launcher"):
        distributed.ensure_env()


def test_collectives_wait_long_enough_for_a_paper_scale_checkpoint(monkeypatch):
    from datetime import timedelta

    from deeptalk.training.distributed import collective_timeout

    monkeypatch.delenv("DEEPSPEED_TIMEOUT", raising=False)
    assert collective_timeout() == timedelta(minutes=60)  # DeepSpeed's 10 min < rank 0's ~10 min checkpoint write
    monkeypatch.setenv("DEEPSPEED_TIMEOUT", "90")
    assert collective_timeout() == timedelta(minutes=90)
