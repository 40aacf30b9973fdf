"""The phase optimizer: DeepSpeed's CPU Adam on ZeRO's offload path (the paper's zero2_offload), torch's AdamW
elsewhere; the offload path trains on 2 CPU ranks through the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deeptalk.model.speech_lm import SpeechLM
from deeptalk.training.loop import DEEPSPEED_CONFIG_DIR, LoopConfig, deepspeed_config
from deeptalk.training.optimizer import build_optimizer, offloads_optimizer, optimizer_threads
from deeptalk.training.distributed import free_port

ROOT = Path(__file__).resolve().parents[2]


def _ds(name: str) -> dict:
    return json.loads((DEEPSPEED_CONFIG_DIR / f"{name}.json").read_text())


def _groups(seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    weight, bias = torch.nn.Parameter(torch.randn(64, 33)), torch.nn.Parameter(torch.randn(64))
    return [{"name": "decay", "params": [weight]}, {"name": "no_decay", "params": [bias], "weight_decay": 0.0}]


def test_only_the_offload_config_offloads_and_the_others_get_torch_adamw():
    assert offloads_optimizer(_ds("zero2_offload"))
    assert not any(offloads_optimizer(_ds(n)) for n in ("zero0", "zero2", "zero3"))
    assert "zero_force_ds_cpu_optimizer" not in _ds("zero2_offload")  # DeepSpeed refuses a torch optimizer there
    assert type(build_optimizer(_groups(), _ds("zero2"), 1e-3, 0.1)) is torch.optim.AdamW
    loop = LoopConfig(steps=1, batch_size=1, lr=1e-3, deepspeed_config="zero2_offload")
    assert offloads_optimizer(deepspeed_config(loop, 1, torch.device("cpu")))  # CPU ranks keep the offload path


@pytest.mark.slow  # JIT-builds DeepSpeed's cpu_adam op on first use (minutes; cached in .venv/torch_extensions)
def test_cpu_adam_takes_the_same_steps_as_torch_adamw_and_restores_threads():
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    cpu_groups, torch_groups = _groups(), _groups()
    cpu = build_optimizer(cpu_groups, _ds("zero2_offload"), 1e-2, 0.1)
    ref = build_optimizer(torch_groups, _ds("zero2"), 1e-2, 0.1)
    assert isinstance(cpu, DeepSpeedCPUAdam)
    threads = torch.get_num_threads()
    for step in range(5):
        grads = torch.Generator().manual_seed(100 + step)
        for a, b in zip(cpu_groups, torch_groups):
            for p, q in zip(a["params"], b["params"]):
                p.grad = torch.randn(p.shape, generator=grads)
                q.grad = p.grad.clone()
        cpu.step()
        ref.step()
    assert torch.get_num_threads() == threads
    for a, b, start in zip(cpu_groups, torch_groups, _groups()):
        for p, q, p0 in zip(a["params"], b["params"], start["params"]):
            assert (p - p0).abs().max() > 1e-2  # it moved
            assert torch.allclose(p, q, atol=1e-5, rtol=0), a["name"]
    seen = []
    cpu.register_step_pre_hook(lambda *_: seen.append(torch.get_num_threads()))  # runs after the thread hook
    torch.set_num_threads(1)
    try:
        cpu.step()
        assert seen == [optimizer_threads()] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run(root: Path, zero: str) -> dict[str, torch.Tensor]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "tests.training.resume_job", str(root), "--steps", "3", "--zero", zero]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    if zero == "zero2_offload":
        assert "DeepSpeed CPU Adam (ZeRO offload)" in run.stdout + run.stderr
    return SpeechLM.from_pretrained(root / "models" / "stages" / "s2a").state_dict()


@pytest.mark.slow
def test_zero2_offload_trains_on_two_cpu_ranks_like_zero2(tmp_path):
    """The paper's default config end to end on 2 CPU ranks: partitions offloaded, DeepSpeed's CPU Adam stepping
    them; it ends where ZeRO-2 with torch's AdamW ends, frozen expert rows bit-identical."""
    offload, zero2 = _run(tmp_path / "offload", "zero2_offload"), _run(tmp_path / "zero2", "zero2")
    init = SpeechLM.from_pretrained(tmp_path / "offload" / "models" / "stages" / "s1").state_dict()
    assert any(not torch.equal(init[k], offload[k]) for k in init if "experts" in k)
    for layer, speech in ((1, [0, 1, 5]), (2, [2, 3, 4, 7])):  # resume_job's split
        text = [e for e in range(8) if e not in speech]
        key = f"backbone.model.layers.{layer}.mlp.experts.gate_up_proj"
        assert torch.equal(init[key][text], offload[key][text])
    for key in offload:
        assert torch.allclose(offload[key], zero2[key], atol=2e-3, rtol=0), key
