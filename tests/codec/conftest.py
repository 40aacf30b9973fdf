"""Shared fixtures: a few espeak-ng sentences and a small embedded codec fitted on them (seconds on CPU)."""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest
import soundfile as sf

from deeptalk.codec.config import CodecConfig
from deeptalk.codec.embedded import EmbeddedCodec

SENTENCES = [
    "The capital of France is Paris.",
    "Copper has atomic number twenty nine.",
    "A group of lions is called a pride.",
    "The capital of Japan is Tokyo.",
    "Seven plus five makes twelve.",
    "The river flows quietly past the old mill.",
    "Please repeat the sentence after me.",
    "Helium is lighter than air.",
    "The capital of Kenya is Nairobi.",
    "A group of crows is called a murder.",
    "Twenty one divided by three is seven.",
    "The weather today is bright and sunny.",
]


def espeak(text: str, path, voice: str = "en-us+f3") -> tuple[np.ndarray, int]:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    wav, sr = sf.read(path, dtype="float32")
    return wav, sr


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> list[tuple[np.ndarray, int]]:
    """(wav, sr) for every sentence in ``SENTENCES`` (espeak-ng writes 22.05 kHz)."""
    root = tmp_path_factory.mktemp("speech")
    return [espeak(text, root / f"{i}.wav") for i, text in enumerate(SENTENCES)]


@pytest.fixture(scope="session")
def small_config() -> CodecConfig:
    """SNAC's geometry (small, paper) with small codebooks so fitting takes a few seconds."""
    return dataclasses.replace(
        CodecConfig.for_profile("tiny"), level_strides=(4, 2, 1), codebook_size=64, kmeans_iters=4,
        griffin_lim_iters=8,
    )


@pytest.fixture(scope="session")
def codec(speech, small_config) -> EmbeddedCodec:
    return EmbeddedCodec.fit(speech[:-2], small_config, seed=0)
