"""Codec directories on disk: ``config.json`` names the kind, ``load_codec`` dispatches on it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deeptalk.codec.base import Codec
from deeptalk.codec.config import CODEC_KINDS

CONFIG_FILE = "config.json"


def read_meta(path: str | Path) -> dict:
    """The parsed ``config.json`` of a codec directory, with a clear error for every way it can be wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"codec directory {path} does not exist (run the fit_codec step first)")
    meta_file = path / CONFIG_FILE
    if not meta_file.is_file():
        raise ValueError(f"codec directory {path} has no {CONFIG_FILE}")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"codec config {meta_file} is not valid JSON: {err}") from err
    if isinstance(meta, dict) and "kind" not in meta and "vq_strides" in meta:
        meta = {**meta, "kind": "snac"}  # a plain SNAC checkpoint directory, as SNAC publishes them
    if not isinstance(meta, dict) or meta.get("kind") not in CODEC_KINDS:
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise ValueError(f"codec config {meta_file} has kind {kind!r}; expected one of {CODEC_KINDS}")
    return meta


def load_codec(path: str | Path, device: str | torch.device = "cpu") -> Codec:
    """Load any saved codec (``EmbeddedCodec.save`` / ``SnacCodec.save``) from its directory; SNAC's network
    runs on ``device`` (the embedded codec's lookup tables stay on the CPU)."""
    meta = read_meta(path)
    if meta["kind"] == "embedded":
        from deeptalk.codec.embedded import EmbeddedCodec

        return EmbeddedCodec.load(path, meta)
    from deeptalk.codec.snac_adapter import SnacCodec

    return SnacCodec.load(path, meta, device=device)
