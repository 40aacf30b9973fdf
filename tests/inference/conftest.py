"""A tiny packaged model for inference/service tests: random SpeechLM, quickly fitted codec, word tokenizer.

Random weights still exercise every path (prefill with user audio, batch-parallel decoding, codec streaming);
the directory has the layout the ``package`` step writes, so tests load it through ``Engine.load``.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deeptalk.audio_input import AudioInputConfig
from deeptalk.codec.config import CodecConfig
from deeptalk.codec.embedded import EmbeddedCodec
from deeptalk.data.audio_io import read_wav
from deeptalk.data.corpus import TTS_PROMPT
from deeptalk.data.packing import layout_for
from deeptalk.data.text_tokenizer import TextTokenizer
from deeptalk.inference.config import SamplingConfig, ServiceConfig
from deeptalk.inference.engine import CODEC_DIR, MODEL_DIR, TOKENIZER_DIR, Engine
from deeptalk.model.config import BackboneConfig, SpeechLMConfig
from deeptalk.model.speech_lm import SpeechLM

SENTENCES = ["the capital of france is paris", "hello, how are you today?", "two plus two is four"]
QUESTIONS = ["what is the capital of france"]  # in the vocabulary too: the service refuses unknown words (422)
AUDIO = AudioInputConfig(
    max_seconds=3.0,
    encoder_layers=1,
    encoder_dim=16,
    encoder_heads=2,
    encoder_ffn_dim=32,
    projector_stride=4,
    projector_hidden=32,
)
SERVICE = ServiceConfig(
    max_steps=40,
    max_asr_steps=12,
    max_upload_seconds=3.0,
    max_upload_bytes=400_000,
    sampling=SamplingConfig(audio_top_k=4, seed=0),
    queue_timeout_s=0.5,
    retry_after_s=1,
)


def espeak(text: str, path: Path, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


def build_package(root: Path, seed: int = 0, audio: AudioInputConfig = AUDIO) -> Path:
    """Write model/, codec/, tokenizer/ of a tiny random model under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    wavs = [read_wav(espeak(s, root / f"fit{i}.wav")) for i, s in enumerate(SENTENCES)]
    codec = EmbeddedCodec.fit(
        wavs, CodecConfig(codebook_size=32, kmeans_iters=3, griffin_lim_iters=4), seed=seed
    )
    tokenizer = TextTokenizer.build([*SENTENCES, *QUESTIONS, TTS_PROMPT])
    layout = layout_for(tokenizer, codec, voices=("joe", "slt"))
    backbone = BackboneConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        intermediate_size=64,
        kv_lora_rank=16,
        qk_nope_head_dim=8,
        qk_rope_head_dim=8,
        v_head_dim=8,
        max_position_embeddings=512,
        experts_implementation="eager",
    )
    torch.manual_seed(seed)
    model = SpeechLM.build(SpeechLMConfig(backbone, layout, audio))
    model.save_pretrained(root / MODEL_DIR)
    codec.save(root / CODEC_DIR)
    tokenizer.save(root / TOKENIZER_DIR)
    return root


@pytest.fixture(scope="session")
def package_dir(tmp_path_factory) -> Path:
    return build_package(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="session")
def engine(package_dir) -> Engine:
    return Engine.load(package_dir, SERVICE)


@pytest.fixture(scope="session")
def user_wav(tmp_path_factory) -> np.ndarray:
    wav, _ = read_wav(
        espeak("what is the capital of france", tmp_path_factory.mktemp("wav") / "q.wav"), 16000
    )
    return wav


@pytest.fixture
def greedy_engine(engine) -> Engine:
    """The same weights with deterministic audio (top-k 1)."""
    return replace(engine, config=replace(engine.config, sampling=SamplingConfig(audio_top_k=1)))
