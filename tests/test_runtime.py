"""Thread counts: a fixed default for training (bit-reproducible whatever the load), free cores split among the
service's callers, set in one place."""

from __future__ import annotations

import os

import pytest
import torch

from deeptalk import runtime


@pytest.fixture
def machine(monkeypatch):
    """16 allotted cores, all free, no launcher variables, no override; torch's thread count restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "available_cores", lambda: 16)
    monkeypatch.setattr(runtime, "free_cores", lambda: 16)
    for var in ("DEEPTALK_THREADS", "LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # restored by monkeypatch after setup_threads overwrites it
    yield monkeypatch
    torch.set_num_threads(before)


def test_threads_per_sharer_arithmetic():
    assert runtime.threads_per_sharer(1, 16) == 16
    assert runtime.threads_per_sharer(4, 16) == 4
    assert runtime.threads_per_sharer(3, 16) == 5  # rounded down: never more threads than cores
    assert runtime.threads_per_sharer(8, 4) == 1  # at least one each
    with pytest.raises(ValueError, match="sharers must be >= 1"):
        runtime.threads_per_sharer(0, 16)


@pytest.mark.parametrize("load", [0.0, 1.0, 7.6, 15.0, 40.0])
def test_the_training_default_does_not_depend_on_the_load(machine, load):
    """The thread count a training process resolves is the same however busy the machine is."""
    machine.setattr(runtime, "free_cores", lambda: runtime.available_cores())  # the real arithmetic again
    machine.setattr(os, "getloadavg", lambda: (load, load, load))
    assert runtime.setup_threads() == runtime.DEFAULT_THREADS
    assert torch.get_num_threads() == runtime.DEFAULT_THREADS
    assert os.environ["OMP_NUM_THREADS"] == str(runtime.DEFAULT_THREADS)  # for DeepSpeed's CPU Adam


@pytest.mark.parametrize(("var", "cores", "expected"), [("LOCAL_WORLD_SIZE", 16, 2), ("LOCAL_SIZE", 4, 1)])
def test_training_ranks_on_a_node_share_the_allotted_cores(machine, var, cores, expected):
    machine.setattr(runtime, "available_cores", lambda: cores)
    machine.setenv(var, "4")  # torchrun, deepspeed launcher
    assert runtime.local_processes() == 4
    assert runtime.setup_threads() == expected  # never more than DEFAULT_THREADS, never more than cores / ranks


def test_a_one_core_allotment_gets_one_thread(machine):
    machine.setattr(runtime, "available_cores", lambda: 1)
    assert runtime.default_threads() == 1


def test_service_workers_times_concurrent_answers_split_the_free_cores(machine):
    assert runtime.setup_threads(sharers=2 * 4) == 2  # 2 worker processes, 4 answers at once in each
    assert runtime.setup_threads(sharers=1) == 16
    machine.setattr(runtime, "free_cores", lambda: 4)
    assert runtime.setup_threads(sharers=1) == 4  # the service follows the load (latency, not bits)


def test_explicit_counts_win_over_the_default(machine):
    machine.setenv("LOCAL_WORLD_SIZE", "8")
    assert runtime.setup_threads(threads=3) == 3  # params.yaml `threads`, per process
    machine.setenv("DEEPTALK_THREADS", "5")
    assert runtime.setup_threads(threads=3) == 5


@pytest.mark.parametrize(("cpu_max", "cap"), [("200000 100000", 2), ("150000 100000", 2), ("max 100000", None)])
def test_available_cores_honour_a_container_cpu_quota(tmp_path, monkeypatch, cpu_max, cap):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max + "\n")
    monkeypatch.setattr(runtime, "CGROUP_CPU_MAX", path)
    affinity = len(os.sched_getaffinity(0))
    assert runtime.available_cores() == (affinity if cap is None else min(affinity, cap))
    monkeypatch.setattr(runtime, "CGROUP_CPU_MAX", tmp_path / "absent")
    assert runtime.available_cores() == affinity
