"""Tiny, seeded speech-LM configurations shared by the model tests (build in well under a second)."""

from __future__ import annotations

import pytest
import torch

from deeptalk.audio_input import AudioInputConfig
from deeptalk.batch import AudioSegments, SpeechBatch
from deeptalk.model.config import BackboneConfig, LossConfig, SpeechLMConfig
from deeptalk.model.speech_lm import SpeechLM
from deeptalk.tokens import IGNORE_INDEX, TokenLayout

LAYOUT = TokenLayout(text_vocab_size=50, n_audio_streams=3, codebook_size=16, voices=("joe",))
AUDIO = AudioInputConfig(
    max_seconds=0.32, encoder_layers=1, encoder_dim=16, encoder_heads=2, encoder_ffn_dim=32,
    projector_stride=4, projector_hidden=32,
)


def tiny_backbone(**overrides) -> BackboneConfig:
    fields = dict(
        hidden_size=32, num_layers=3, num_heads=2, first_k_dense_replace=1, n_routed_experts=8,
        num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=16, intermediate_size=64,
        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, max_position_embeddings=256,
        experts_implementation="eager",
    )
    fields.update(overrides)
    return BackboneConfig(**fields)


def tiny_config(loss: LossConfig | None = None, **backbone) -> SpeechLMConfig:
    return SpeechLMConfig(tiny_backbone(**backbone), LAYOUT, AUDIO, loss or LossConfig())


def build_tiny(seed: int = 0, **backbone) -> SpeechLM:
    torch.manual_seed(seed)
    return SpeechLM.build(tiny_config(**backbone))


def random_batch(layout: TokenLayout = LAYOUT, b: int = 2, t: int = 12, seed: int = 1, audio: bool = True,
                 labels: bool = True) -> SpeechBatch:
    """Text on the text stream, codes on the audio streams, one audio segment in row 1 at positions 2..5."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.empty(b, t, layout.n_streams, dtype=torch.long)
    ids[..., layout.text_stream] = torch.randint(0, layout.text_vocab_size, (b, t), generator=g)
    for s in range(layout.n_audio_streams):
        ids[..., s] = layout.stream_offset(s) + torch.randint(0, layout.codebook_size, (b, t), generator=g)
    segments = None
    if audio:
        ids[1, 2:6, layout.text_stream] = layout.text_special("AUDIO_PH")
        for s in range(layout.n_audio_streams):
            ids[1, 2:6, s] = layout.audio_special("PAD_A", s)
        segments = AudioSegments(
            frames=torch.randn(1, 4 * AUDIO.projector_stride, AUDIO.encoder_dim, generator=g),
            n_positions=torch.tensor([4]), batch_index=torch.tensor([1]), start=torch.tensor([2]),
        )
    lab = None
    if labels:
        lab = ids.clone()
        lab[1, 2:6] = IGNORE_INDEX
    return SpeechBatch(ids, torch.ones(b, t, dtype=torch.long), lab, segments)


@pytest.fixture
def model() -> SpeechLM:
    return build_tiny()
