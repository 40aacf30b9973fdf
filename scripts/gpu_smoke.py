"""GPU smoke test of the paper path (``make gpu-smoke``): mini checkpoints → S1 → S3 through the ``deepspeed``
launcher in bf16 → an inference session → first-audio latency p50/p90 and training tokens/s. Exit 1 on any failure.

    python scripts/gpu_smoke.py                           # one GPU, bf16, the paper's zero2_offload, < 8 min
    python scripts/gpu_smoke.py --device cpu --ranks 2    # what the test suite runs (2 CPU ranks, fp32)

It builds a throwaway project in ``--workdir``: the mini DeepSeek-V2-Lite-Chat / medium-shaped Whisper / SNAC
(``deeptalk.testing.mini_checkpoints``, the real on-disk layouts at small widths), a small spoken corpus, and a
``params.yaml`` with ``profile: paper`` overriding only sizes. Data steps and the text baseline run as
``python -m deeptalk step …``; every training stage runs exactly as the README tells a GPU user to:
``deepspeed --num_gpus N --module deeptalk.training --stage <s> --params <project>/params.yaml``. The figures are
printed as one JSON line (and written to ``<workdir>/gpu_smoke.json``); they measure the mini model, i.e. the
plumbing (launcher, NCCL, bf16, device placement, streaming), not paper-scale speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("gpu_smoke")

sys.path.insert(0, str(REPO))  # run from a checkout: `python scripts/gpu_smoke.py`
from deeptalk.steps import DATA_STEPS, STAGE_STEPS  # noqa: E402
from deeptalk.training.stages import BY_NAME, CHAIN, DEEPTALK_STAGES, PROFILED_FROM  # noqa: E402

# the default chain from the chain table: data steps and the original LLM as steps, then S1 (profiled for the
# expert split) and DeepTalk's stages through the deepspeed launcher, as a GPU user runs them
FIRST_STEPS = (*DATA_STEPS, STAGE_STEPS[CHAIN[0].name])
STAGES = (PROFILED_FROM, *DEEPTALK_STAGES)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".venv" / "torch_extensions"))  # DeepSpeed's built ops
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _run(cmd: list[str], project: Path, timeout: float) -> float:
    """Run ``cmd`` in ``project``; its output goes to ``smoke.log`` there. Returns the wall seconds."""
    log.info("$ %s", " ".join(cmd))
    start = time.perf_counter()
    with open(project / "smoke.log", "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=project, env=_env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = (project / "smoke.log").read_text()[-4000:]
        raise RuntimeError(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - start


def build_project(project: Path, device: str, steps: int, batch: int, zero: str | None) -> dict:
    """Mini checkpoints, a small corpus and ``params.yaml`` (``profile: paper``, sizes overridden; the paper's
    DeepSpeed config unless ``zero`` names another)."""
    from deeptalk.data.config import DataConfig
    from deeptalk.data.corpus import build_corpus
    from deeptalk.testing.mini_checkpoints import build_all

    minis = build_all(project / "checkpoints")
    corpus = project / "corpus"
    counts = {"asr": (12, 2, 3), "tts": (6, 1, 2), "aqa": (12, 2, 8), "tqa": (8, 2, 4), "rqa": (8, 2, 3)}
    build_corpus(DataConfig(seed=0, counts=counts, max_facts=80, workers=2), corpus)
    shutil.rmtree(corpus / "tokenizer", ignore_errors=True)  # the LLM's tokenizer comes from its checkpoint
    budget = {"steps": steps, "batch_size": batch, "grad_accum": 2}
    training = {**{s: dict(budget) for s in STAGES}, "profile_batches": 2, "eval_batches": 2,
                "checkpoint_every": steps, "log_every": 1, "bf16": True}
    if zero is not None:
        training["deepspeed_config"] = zero
    params = {
        "profile": "paper",
        "device": device,
        "data": {"import_source": str(corpus)},
        "audio_input": minis.whisper_geometry(),
        "training": training,
        "service": {"max_steps": 32},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def first_audio_latency(project: Path, n_clips: int) -> dict:
    """Spoken questions through an inference session on the S3 model (the service's engine), on the device."""
    from deeptalk.config import load_config
    from deeptalk.evaluation.engine import load_engine
    from deeptalk.evaluation.heldout import heldout_for, load_audio
    from deeptalk.evaluation.latency import measure_latency

    cfg = load_config(project / "params.yaml")
    engine = load_engine(cfg, cfg.paths.stage("s3"))
    clips = [load_audio(q.audio_path, engine.audio_input.sample_rate)
             for q in heldout_for(cfg).spoken_qa if q.audio_path is not None][:n_clips]
    if not clips:
        raise RuntimeError("no held-out spoken questions to time")
    result = measure_latency(engine, clips, warmup=1)
    result["device"] = str(engine.model.device)
    result["dtype"] = str(engine.model.backbone.dtype)
    return result


def smoke(workdir: Path, device: str, ranks: int, steps: int, batch: int, zero: str | None, clips: int) -> dict:
    project = workdir / "project"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    t0 = time.perf_counter()
    build_project(project, device, steps, batch, zero)
    from deeptalk.config import load_config

    zero = load_config(project / "params.yaml").training.deepspeed_config  # the one the stages run
    timings = {"build_s": round(time.perf_counter() - t0, 1)}
    params = ["--params", str(project / "params.yaml")]
    for step in FIRST_STEPS:
        timings[f"{step}_s"] = round(_run([sys.executable, "-m", "deeptalk", "step", step, *params], project, 900), 1)
    launcher = str(Path(sys.executable).parent / "deepspeed")
    training: dict[str, dict] = {}
    for stage in STAGES:
        cmd = [launcher, "--num_gpus", str(ranks), "--master_port", str(_free_port()), "--module",
               "deeptalk.training", "--stage", stage, *params]
        timings[f"train_{stage}_s"] = round(_run(cmd, project, 900), 1)
        summary = json.loads((project / BY_NAME[stage].out / "train_summary.json").read_text())
        training[stage] = {k: summary[k] for k in ("steps", "tokens", "tokens_per_s", "wall_s") if k in summary}
        if stage == PROFILED_FROM:
            timings["profile_experts_s"] = round(
                _run([sys.executable, "-m", "deeptalk", "step", "profile_experts", *params], project, 900), 1)
    os.environ.update({k: v for k, v in _env().items() if k in ("HF_HUB_OFFLINE",)})
    latency = first_audio_latency(project, clips)
    if latency.get("first_audio_ms_p90") is None:
        raise RuntimeError(f"no answer produced audio: {latency}")
    tokens = sum(t["tokens"] for t in training.values())
    train_wall = sum(t["wall_s"] for t in training.values())
    return {
        "device": device, "ranks": ranks, "zero": zero,
        "first_audio_ms_p50": round(latency["first_audio_ms_median"], 1),
        "first_audio_ms_p90": round(latency["first_audio_ms_p90"], 1),
        "latency": latency,
        "train_tokens_per_s": round(tokens / train_wall, 1) if train_wall > 0 else None,
        "training": training, "timings_s": timings, "total_s": round(time.perf_counter() - t0, 1),
    }


def _free_port() -> int:
    from deeptalk.training.distributed import free_port

    return free_port()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--ranks", type=int, default=1, help="processes the deepspeed launcher starts (GPUs)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per stage")
    parser.add_argument("--batch", type=int, default=2, help="micro-batch per rank (2 micro-batches per step)")
    parser.add_argument("--zero", default=None,
                        help="configs/deepspeed/<name>.json (default: the paper profile's, zero2_offload)")
    parser.add_argument("--clips", type=int, default=8, help="spoken questions timed for first-audio latency")
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given; a temp dir otherwise")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            log.error("--device cuda but no CUDA device is visible (use --device cpu to check the plumbing)")
            return 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="deeptalk-gpu-smoke-"))
    try:
        result = smoke(workdir, args.device, args.ranks, args.steps, args.batch, args.zero, args.clips)
    except Exception as exc:  # noqa: BLE001 - any failure is the smoke test's verdict
        log.error("gpu smoke FAILED: %s", exc)
        return 1
    (workdir / "gpu_smoke.json").write_text(json.dumps(result, indent=1))
    log.info("first audio p50 %.1f ms, p90 %.1f ms; training %.1f tokens/s; total %.0f s (%s)",
             result["first_audio_ms_p50"], result["first_audio_ms_p90"], result["train_tokens_per_s"] or 0,
             result["total_s"], workdir / "gpu_smoke.json")
    print(json.dumps({k: result[k] for k in ("device", "ranks", "zero", "first_audio_ms_p50",
                                             "first_audio_ms_p90", "train_tokens_per_s", "total_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
