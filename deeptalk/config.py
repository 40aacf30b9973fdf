"""Typed project configuration: one preset file per profile, overridden by ``params.yaml``.

Each concern owns its dataclass next to its code (``deeptalk/<pkg>/config.py``); a profile's values for every
section live in one file, ``configs/profiles/<profile>.yaml`` (read by ``deeptalk.presets``; each section's
``for_profile(name)`` returns its part). This module composes the sections and applies the user's overrides
strictly (an unknown key is an error, never ignored).
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
from deeptalk.data.config import DataConfig, PackingConfig
from deeptalk.evaluation.config import EvalConfig
from deeptalk.inference.config import ServiceConfig
from deeptalk.model.config import BackboneConfig
from deeptalk.presets import PROFILES, preset
from deeptalk.runtime import check_device_setting
from deeptalk.training.config import TrainingConfig

__all__ = ["PROFILES", "Paths", "ProjectConfig", "load_config", "SECTIONS"]


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
    threads: int  # torch intra-op threads; 0 = runtime.DEFAULT_THREADS, fixed (see deeptalk.runtime)
    paths: Paths
    data: DataConfig
    packing: PackingConfig
    codec: CodecConfig
    audio_input: AudioInputConfig
    model: BackboneConfig
    training: TrainingConfig
    evaluation: EvalConfig
    service: ServiceConfig
    # where models run: auto (CUDA when visible, else CPU) | cpu | cuda | cuda:N (deeptalk.runtime.resolve_device)
    device: str = "auto"


# params.yaml / preset section → its dataclass (``gates`` is the user-facing spelling of ``evaluation.gates``)
SECTIONS: dict[str, Any] = {
    "data": DataConfig,
    "packing": PackingConfig,
    "codec": CodecConfig,
    "audio_input": AudioInputConfig,
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
    """Build the config: the profile's preset file, then ``params.yaml``, then ``overrides`` (flow parameters).

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
    known = set(SECTIONS) | {"seed", "threads", "device", "gates"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"params: unknown section(s) {unknown}; valid: {sorted(known)}")

    sections = {}
    for key, cls in SECTIONS.items():
        sections[key] = _override(preset(cls, key, name), params.get(key) or {}, key)
    if "gates" in params:  # top-level `gates:` is the user-facing spelling of evaluation.gates
        sections["evaluation"] = _override(sections["evaluation"], {"gates": params["gates"]}, "gates")
    paths = Paths(Path(root) if root is not None else params_path.resolve().parent)
    audio_input = sections["audio_input"]
    if audio_input.encoder_checkpoint is not None and not Path(audio_input.encoder_checkpoint).is_absolute():
        sections["audio_input"] = dataclasses.replace(
            audio_input, encoder_checkpoint=str(paths.root.resolve() / audio_input.encoder_checkpoint)
        )
    return ProjectConfig(
        profile=name,
        seed=int(params.get("seed", 0)),
        threads=int(params.get("threads", 0)),
        device=check_device_setting(params.get("device", "auto"), "params: device"),
        paths=paths,
        **sections,
    )

