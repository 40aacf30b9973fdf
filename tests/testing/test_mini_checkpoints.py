"""The mini checkpoints have the real on-disk layouts and load through the code paths the paper profile uses."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from deeptalk.audio_input import AudioInputConfig
from deeptalk.codec.registry import load_codec
from deeptalk.model.audio_encoder import build_audio_encoder
from deeptalk.testing.mini_checkpoints import build_all


@pytest.fixture(scope="module")
def minis(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("checkpoints"))


def test_llm_is_in_the_hub_layout(minis):
    config = json.loads((minis.llm / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_deepseek.DeepseekV2ForCausalLM"
    assert config["rope_scaling"]["type"] == "yarn" and config["q_lora_rank"] is None
    assert config["tie_word_embeddings"] is False and config["n_shared_experts"] == 2
    assert config["torch_dtype"] == "bfloat16" and config["first_k_dense_replace"] == 1
    index = json.loads((minis.llm / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.mlp.experts.63.gate_proj.weight" in index and "lm_head.weight" in index
    assert (config["n_routed_experts"], config["num_experts_per_tok"]) == (64, 6)
    assert not any(k.endswith("gate_up_proj") for k in index)
    assert len(set(index.values())) == 2


def test_tokenizer_is_shorter_than_the_embedding_and_has_the_chat_template(minis):
    tok = AutoTokenizer.from_pretrained(minis.llm, local_files_only=True)
    rows = json.loads((minis.llm / "config.json").read_text())["vocab_size"]
    assert len(tok) < rows
    assert "chat_template" in json.loads((minis.llm / "tokenizer_config.json").read_text())
    text = tok.apply_chat_template([{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True)
    assert text == "<｜begin▁of▁sentence｜>User: Hi?\n\nAssistant:"
    assert tok.decode(tok.encode("naïve café ☃", add_special_tokens=False)) == "naïve café ☃"  # byte level


def test_per_expert_tensors_load_into_the_fused_experts(minis):
    model = AutoModelForCausalLM.from_pretrained(minis.llm, local_files_only=True)
    assert model.config.rope_parameters["rope_type"] == "yarn"
    index = json.loads((minis.llm / "model.safetensors.index.json").read_text())["weight_map"]
    key = "model.layers.2.mlp.experts.5.up_proj.weight"
    with safe_open(minis.llm / index[key], "pt") as f:
        stored = f.get_tensor(key)
    fused = model.model.layers[2].mlp.experts.gate_up_proj[5]
    assert torch.equal(fused[stored.shape[0]:], stored)
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_whisper_loads_as_the_frozen_encoder(minis):
    geometry = minis.whisper_geometry()
    cfg = AudioInputConfig(max_seconds=30.0, projector_stride=1, **geometry, encoder_checkpoint=str(minis.whisper))
    encoder = build_audio_encoder(cfg)
    assert encoder.config.max_source_positions == 1500 and encoder.config.num_mel_bins == 80
    assert encoder.config.vocab_size == 51865  # medium's multilingual vocabulary
    with pytest.raises(ValueError):
        build_audio_encoder(dataclasses.replace(cfg, encoder_dim=1024))


def test_the_scorer_is_a_transformers_whisper(minis):
    from deeptalk.evaluation.asr_scorer import HFWhisperScorer, load_scorer

    assert minis.scorer.name == "whisper-large-v3"
    assert isinstance(load_scorer("whisper-large-v3", root=minis.scorer.parent), HFWhisperScorer)


def test_snac_has_the_24khz_geometry(minis):
    codec = load_codec(minis.snac)
    assert (codec.n_streams, codec.codebook_size, codec.sample_rate) == (7, 4096, 24000)


def test_params_overrides_name_every_checkpoint(minis):
    over = minis.params_overrides()
    assert over["model"]["checkpoint"] == str(minis.llm) and over["codec"]["checkpoint"] == str(minis.snac)
    assert over["audio_input"]["encoder_source"] == str(minis.whisper)
