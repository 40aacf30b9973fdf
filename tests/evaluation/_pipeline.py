"""A miniature pipeline output for evaluation tests: corpus, fitted codec, random base and stage models.

Random weights answer nothing correctly, but every evaluation path runs for real (held-out manifests, the
inference Engine and Session, streaming codec decode, the Whisper scorer, report and gate files).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import torch

from deeptalk.audio_input import AudioInputConfig
from deeptalk.codec.config import CodecConfig
from deeptalk.codec.embedded import EmbeddedCodec
from deeptalk.data.audio_io import read_wav
from deeptalk.data.config import DataConfig
from deeptalk.data.packing import layout_for
from deeptalk.data.text_tokenizer import load_tokenizer
from deeptalk.model.config import BackboneConfig, SpeechLMConfig
from deeptalk.model.speech_lm import SpeechLM

COUNTS = {"asr": (2, 1, 2), "tts": (2, 1, 2), "aqa": (2, 1, 2), "tqa": (2, 1, 3), "rqa": (2, 1, 1)}
AUDIO = AudioInputConfig(max_seconds=8.0, encoder_layers=1, encoder_dim=16, encoder_heads=2, encoder_ffn_dim=32,
                         projector_stride=4, projector_hidden=32)
BACKBONE = BackboneConfig(
    hidden_size=32, num_layers=2, num_heads=2, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
    intermediate_size=64, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
    max_position_embeddings=1024, experts_implementation="eager",
)


def random_model(layout, seed: int) -> SpeechLM:
    torch.manual_seed(seed)
    return SpeechLM.build(SpeechLMConfig(BACKBONE, layout, AUDIO)).eval()


@functools.lru_cache(maxsize=None)
def mini_pipeline() -> Path:
    """Project root with data/raw, models/codec, models/base and models/stages/s3 (read-only for tests)."""
    from deeptalk.data.corpus import build_corpus

    root = Path(tempfile.mkdtemp(prefix="deeptalk-eval-"))
    import atexit

    atexit.register(shutil.rmtree, root, True)
    raw = root / "data" / "raw"
    build_corpus(DataConfig(seed=0, counts=COUNTS, max_facts=60, workers=1), raw)
    wavs = [read_wav(p) for p in sorted((raw / "audio").glob("*.wav"))[:6]]
    codec = EmbeddedCodec.fit(wavs, CodecConfig(codebook_size=32, kmeans_iters=3, griffin_lim_iters=4), seed=0)
    codec.save(root / "models" / "codec")
    layout = layout_for(load_tokenizer(raw / "tokenizer"), codec)
    random_model(layout, 0).save_pretrained(root / "models" / "base")
    random_model(layout, 1).save_pretrained(root / "models" / "stages" / "s3")
    return root
