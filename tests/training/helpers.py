"""A very small project config, speech LM and synthetic batches for runner tests (seeded, CPU, seconds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from deeptalk.batch import AudioSegments, SpeechBatch
from deeptalk.config import load_config
from deeptalk.tokens import IGNORE_INDEX, TokenLayout
from deeptalk.training.config import StageBudget

LAYOUT = TokenLayout(text_vocab_size=40, n_audio_streams=3, codebook_size=32)


def tiny_cfg(root: Path, steps: int = 4, checkpoint_every: int = 2):
    cfg = load_config(root / "params.yaml", profile="tiny", root=root)
    model = dataclasses.replace(
        cfg.model, hidden_size=32, num_layers=3, num_heads=2, n_routed_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=16, intermediate_size=64, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
        v_head_dim=8, max_position_embeddings=256,
    )
    # the frame projector: synthetic_batches give each user-audio segment the encoder geometry's positions
    audio = dataclasses.replace(cfg.audio_input, max_seconds=1.0, encoder_layers=1, encoder_dim=32,
                                encoder_heads=2, encoder_ffn_dim=64, projector_hidden=32, encoder_checkpoint=None,
                                interface="projector")
    budget = StageBudget(steps=steps, batch_size=2, lr=5e-3, max_len=32)
    training = dataclasses.replace(
        cfg.training, text_pretrain=budget, s1=budget, s2a=budget, s2b=budget, s3=budget, plain=budget,
        checkpoint_every=checkpoint_every, log_every=2, deepspeed_config="zero2",
    )
    return dataclasses.replace(cfg, model=model, audio_input=audio, training=training)


def synthetic_batches(cfg, seed: int = 0, audio: bool = True):
    """Batch of step i: text positions, a spoken-answer span with codes, optionally one user-audio segment."""
    lay = LAYOUT
    k = lay.n_audio_streams
    pad_a = torch.tensor([lay.audio_special("PAD_A", s) for s in range(k)])
    n_pos = cfg.audio_input.max_positions

    def make(step: int) -> SpeechBatch:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        b, t = 2, 24
        ids = torch.empty(b, t, k + 1, dtype=torch.long)
        ids[..., :k] = pad_a
        ids[..., k] = torch.randint(0, lay.text_vocab_size, (b, t), generator=g)
        for s in range(k):  # spoken answer: codes on every audio stream in the second half
            ids[:, t // 2:, s] = lay.stream_offset(s) + torch.randint(0, lay.codebook_size, (b, t - t // 2), generator=g)
        labels = ids.clone()
        labels[:, :2] = IGNORE_INDEX
        segments = None
        if audio:
            ids[0, 1:1 + n_pos, k] = lay.text_special("AUDIO_PH")
            segments = AudioSegments(
                frames=torch.randn(1, n_pos * cfg.audio_input.projector_stride, cfg.audio_input.encoder_dim, generator=g),
                n_positions=torch.tensor([n_pos]), batch_index=torch.tensor([0]), start=torch.tensor([1]),
            )
            labels[0, 1:1 + n_pos] = IGNORE_INDEX
        return SpeechBatch(input_ids=ids, attention_mask=torch.ones(b, t, dtype=torch.long), labels=labels,
                           audio=segments)

    return make


def save_tiny_model(cfg, path: Path, split=None):
    from deeptalk.model.config import SpeechLMConfig
    from deeptalk.model.speech_lm import SpeechLM

    torch.manual_seed(0)
    model = SpeechLM.build(SpeechLMConfig.from_project(cfg, LAYOUT), expert_split=split)
    model.save_pretrained(path)
    return model
