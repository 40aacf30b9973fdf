"""Profile presets: one YAML file per profile (``configs/profiles/<profile>.yaml``), torchtune style.

A preset file holds every section's values for its profile; the section dataclasses keep their typed fields and
defaults (a field a preset does not name takes its dataclass default, so a new field with a default works before
anyone adds it to the files). ``params.yaml`` then holds only deliberate overrides (``deeptalk/config.py``).

This module imports no section config, so each section's ``for_profile`` can read its preset through it.
Unknown profiles, sections and keys are errors naming the problem, never ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

PROFILES = ("tiny", "small", "paper")
PROFILES_DIR = Path(__file__).resolve().parents[1] / "configs" / "profiles"
# sections a preset file may hold; each maps to one dataclass (see deeptalk/config.py)
SECTIONS = ("data", "packing", "codec", "audio_input", "model", "training", "evaluation", "service")

T = TypeVar("T")


def preset_path(profile: str) -> Path:
    """The preset file of ``profile`` (an unknown name is an error listing the valid ones)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    return PROFILES_DIR / f"{profile}.yaml"


@functools.lru_cache(maxsize=None)
def _read(path: Path, mtime_ns: int) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset file must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; valid: {list(SECTIONS)}")
    return data


def load_preset(profile: str) -> dict[str, Any]:
    """The raw mapping of ``profile``'s preset file (sections → values), read once per file version."""
    path = preset_path(profile)
    if not path.exists():
        raise FileNotFoundError(f"profile {profile!r}: preset file {path} is missing")
    return _read(path, path.stat().st_mtime_ns)


def preset(cls: type[T], section: str, profile: str, key: str | None = None) -> T:
    """``cls`` built from the ``section`` (or its sub-mapping ``key``) of ``profile``'s preset file; fields the
    file omits keep their dataclass defaults."""
    if section not in SECTIONS:
        raise ValueError(f"unknown preset section {section!r}; valid: {list(SECTIONS)}")
    values = load_preset(profile).get(section) or {}
    where = f"{preset_path(profile).name}: {section}"
    if key is not None:
        values, where = (values.get(key) or {}), f"{where}.{key}"
    return build(cls, values, where)


def build(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from a YAML mapping: nested dataclasses from mappings, tuples from lists.

    An unknown key, or a field without a default that the mapping leaves out, is an error naming it.
    """
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = convert(hints[name], value, f"{where}.{name}")
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and f.init
    ]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {missing}")
    return cls(**kwargs)


def convert(hint: Any, value: Any, where: str) -> Any:
    """YAML value → the field's type: a mapping becomes the (possibly optional) dataclass, a list a tuple."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else hint
        origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(convert(inner, v, where) if inner is not None else v for v in value)
    return value
