"""Shared parts of the serving benchmarks (``benchmarks/latency.py``, ``benchmarks/concurrency.py``).

``bench_package`` assembles a packaged model from what the pipeline has produced so far: the trained S3
model when it exists, otherwise a randomly initialised model with the profile's architecture (same layers,
experts and vocabulary size, so timings are representative; answers are noise and never end early, which
``max_steps`` caps). The fitted codec and the corpus tokenizer are used when present.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from deeptalk.config import ProjectConfig
from deeptalk.inference.config import ServiceConfig
from deeptalk.inference.engine import CODEC_DIR, META_FILE, MODEL_DIR, TOKENIZER_DIR

log = logging.getLogger(__name__)

QUESTIONS = (
    "what is the capital of france",
    "how many legs does a spider have",
    "who wrote hamlet",
    "what is two plus two",
    "what is the chemical symbol for gold",
)


def espeak_wav(text: str, path: Path, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


def bench_package(
    cfg: ProjectConfig, out: Path, service: ServiceConfig, stage: str = "s3"
) -> tuple[Path, str]:
    """Write ``model/ codec/ tokenizer/ package.json`` under ``out``; returns it and a description of the source."""
    import torch

    from deeptalk.codec.config import CodecConfig
    from deeptalk.codec.embedded import EmbeddedCodec
    from deeptalk.codec.registry import load_codec
    from deeptalk.data.audio_io import read_wav
    from deeptalk.data.packing import layout_for
    from deeptalk.data.text_tokenizer import TextTokenizer, load_tokenizer
    from deeptalk.model.config import SpeechLMConfig
    from deeptalk.model.speech_lm import SpeechLM

    out.mkdir(parents=True, exist_ok=True)
    parts = []
    tok_dir = cfg.paths.raw / "tokenizer"
    if tok_dir.is_dir():
        shutil.copytree(tok_dir, out / TOKENIZER_DIR)
        tokenizer = load_tokenizer(out / TOKENIZER_DIR)
        parts.append(f"tokenizer from {tok_dir}")
    else:
        tokenizer = TextTokenizer.build(QUESTIONS)
        tokenizer.save(out / TOKENIZER_DIR)
        parts.append("tokenizer built from the benchmark questions")
    if cfg.paths.codec.is_dir():
        shutil.copytree(cfg.paths.codec, out / CODEC_DIR)
        codec = load_codec(out / CODEC_DIR)
        parts.append(f"codec from {cfg.paths.codec}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            wavs = [read_wav(espeak_wav(q, Path(tmp) / f"{i}.wav")) for i, q in enumerate(QUESTIONS * 3)]
        codec = EmbeddedCodec.fit(wavs, CodecConfig(codebook_size=128, kmeans_iters=4), seed=cfg.seed)
        codec.save(out / CODEC_DIR)
        parts.append("codec fitted on espeak questions (128 codes)")
    stage_dir = cfg.paths.stage(stage)
    if (stage_dir / "speech_lm.json").exists():
        shutil.copytree(stage_dir, out / MODEL_DIR)
        parts.append(f"trained model {stage_dir}")
    else:
        torch.manual_seed(cfg.seed)
        layout = layout_for(tokenizer, codec)
        audio_input = cfg.audio_input
        checkpoint = audio_input.encoder_checkpoint
        if checkpoint is not None and not (cfg.paths.root / checkpoint / "config.json").exists():
            # the pipeline has not converted the frozen encoder yet: convert it here, as prepare_encoder does
            from deeptalk.model.whisper_convert import load_ct2, save_whisper

            save_whisper(load_ct2(audio_input.encoder_source), out / "encoder")
            audio_input = replace(audio_input, encoder_checkpoint=str(out / "encoder"))
            parts.append(f"encoder converted from {audio_input.encoder_source}")
        SpeechLM.build(SpeechLMConfig(cfg.model, layout, audio_input)).save_pretrained(out / MODEL_DIR)
        parts.append(f"RANDOM model with the {cfg.profile} architecture (no {stage_dir} yet)")
    (out / META_FILE).write_text(json.dumps({"profile": cfg.profile, "service": service.to_dict()}, indent=2))
    return out, "; ".join(parts)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"
