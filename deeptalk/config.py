"""Typed project configuration: profile presets per section, overridden by ``params.yaml``.

Each concern owns its dataclass next to its code (``deeptalk/<pkg>/config.py``) with a
``for_profile(name)`` classmethod giving the ``tiny`` / ``small`` / ``paper`` preset. This module only
composes them and applies the user's overrides strictly (an unknown key is an error, never ignored).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deeptalk.audio_input import AudioInputConfig
from deeptalk.codec.config import CodecConfig
from deeptalk.data.config import DataConfig
from deeptalk.evaluation.config import EvalConfig
from deeptalk.inference.config import ServiceConfig
from deeptalk.model.config import BackboneConfig
from deeptalk.training.config import TrainingConfig

PROFILES = ("tiny", "small", "paper")


@dataclass(frozen=True)
class Paths:
    """Where every step reads and writes, relative to the project root (all DVC-tracked outs)."""

    root: Path = Path(".")

    def _p(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def raw(self) -> Path:  # generated/imported manifests + wavs
        return self._p("data", "raw")

    @property
    def validated(self) -> Path:  # marker + summary written only when the GX suites pass
        return self._p("data", "validated")

    @property
    def processed(self) -> Path:  # codec tokens, features
        return self._p("data", "processed")

    @property
    def sequences(self) -> Path:  # packed training sequences
        return self._p("data", "sequences")

    @property
    def codec(self) -> Path:
        return self._p("models", "codec")

    @property
    def encoder(self) -> Path:  # the frozen pretrained Whisper (prepare_encoder), a transformers WhisperModel dir
        return self._p("models", "encoder")

    @property
    def base(self) -> Path:  # the "original LLM" (text_pretrain output or imported checkpoint)
        return self._p("models", "base")

    def stage(self, name: str) -> Path:  # one directory per trained stage / baseline
        return self._p("models", "stages", name)

    @property
    def expert_split(self) -> Path:
        return self._p("models", "expert_split.json")

    @property
    def reports(self) -> Path:
        return self._p("reports")

    @property
    def metrics(self) -> Path:
        return self._p("reports", "metrics.json")


@dataclass(frozen=True)
class ProjectConfig:
    profile: str
    seed: int
    threads: int  # torch intra-op threads; 0 = the cores actually free (see deeptalk.runtime)
    paths: Paths
    data: DataConfig
    codec: CodecConfig
    audio_input: AudioInputConfig
    model: BackboneConfig
    training: TrainingConfig
    evaluation: EvalConfig
    service: ServiceConfig


_SECTIONS: dict[str, Any] = {
    "data": DataConfig,
    "codec": CodecConfig,
    "model": BackboneConfig,
    "training": TrainingConfig,
    "evaluation": EvalConfig,
    "service": ServiceConfig,
}


def _override(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """Return ``obj`` with ``updates`` applied; nested dataclasses are merged, unknown keys rejected."""
    if not isinstance(updates, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(updates).__name__}")
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(updates) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    changes = {}
    for key, value in updates.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = _override(current, value, f"{where}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(obj, **changes)


def load_config(
    params_path: str | Path = "params.yaml",
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    root: str | Path | None = None,
) -> ProjectConfig:
    """Build the config: profile presets, then ``params.yaml``, then ``overrides`` (e.g. flow parameters).

    The profile is chosen by ``profile`` > ``$DEEPTALK_PROFILE`` > ``params.yaml: profile`` > ``tiny``.
    """
    params_path = Path(params_path)
    params: dict[str, Any] = {}
    if params_path.exists():
        params = yaml.safe_load(params_path.read_text()) or {}
    for extra in (overrides or {}), :
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(params.get(key), dict):
                params[key] = {**params[key], **value}
            else:
                params[key] = value
    name = profile or os.environ.get("DEEPTALK_PROFILE") or params.pop("profile", None) or "tiny"
    params.pop("profile", None)
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES}")
    known = set(_SECTIONS) | {"seed", "threads", "audio_input", "gates"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"params: unknown section(s) {unknown}; valid: {sorted(known)}")

    sections = {}
    for key, cls in _SECTIONS.items():
        sections[key] = _override(cls.for_profile(name), params.get(key, {}), key)
    if "gates" in params:  # top-level `gates:` is the user-facing spelling of evaluation.gates
        sections["evaluation"] = _override(sections["evaluation"], {"gates": params["gates"]}, "gates")
    audio_input = _override(audio_input_for_profile(name), params.get("audio_input", {}), "audio_input")
    paths = Paths(Path(root) if root is not None else params_path.resolve().parent)
    if audio_input.encoder_checkpoint is not None and not Path(audio_input.encoder_checkpoint).is_absolute():
        audio_input = dataclasses.replace(
            audio_input, encoder_checkpoint=str(paths.root.resolve() / audio_input.encoder_checkpoint)
        )
    return ProjectConfig(
        profile=name,
        seed=int(params.get("seed", 0)),
        threads=int(params.get("threads", 0)),
        paths=paths,
        audio_input=audio_input,
        **sections,
    )


# Whisper geometries (STACK.md): tiny.en d 384 × 4 layers (8.2 M params), base d 512 × 6 layers (20.6 M).
WHISPER_TINY_EN = dict(encoder_layers=4, encoder_dim=384, encoder_heads=6, encoder_ffn_dim=1536, encoder_source="tiny.en")
WHISPER_BASE = dict(encoder_layers=6, encoder_dim=512, encoder_heads=8, encoder_ffn_dim=2048, encoder_source="base")


def audio_input_for_profile(profile: str) -> AudioInputConfig:
    """tiny and small read the Whisper that ``prepare_encoder`` converts into ``models/encoder``."""
    if profile == "tiny":
        return AudioInputConfig(**WHISPER_TINY_EN, projector_hidden=512, encoder_checkpoint="models/encoder")
    if profile == "small":
        return AudioInputConfig(**WHISPER_BASE, projector_hidden=1024, encoder_checkpoint="models/encoder")
    # paper: whisper-medium encoder from a local directory, 50 Hz positions, 30 s windows
    return AudioInputConfig(
        max_seconds=30.0, encoder_layers=24, encoder_dim=1024, encoder_heads=16, encoder_ffn_dim=4096,
        projector_stride=1, projector_hidden=7168, encoder_checkpoint="checkpoints/whisper-medium",
    )
