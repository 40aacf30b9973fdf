"""Model configs: presets, dict round trips, strict validation."""

from __future__ import annotations

import pytest

from deeptalk.model.config import BackboneConfig, LossConfig, SpeechLMConfig

from .conftest import tiny_config


@pytest.mark.parametrize("profile", ["tiny", "small", "paper"])
def test_presets_round_trip(profile):
    cfg = BackboneConfig.for_profile(profile)
    assert BackboneConfig.from_dict(cfg.to_dict()) == cfg
    assert LossConfig.from_dict(LossConfig.for_profile(profile).to_dict()) == LossConfig.for_profile(profile)


def test_paper_preset_reads_deepseek_v2_lite_checkpoint():
    cfg = BackboneConfig.for_profile("paper")
    assert cfg.checkpoint == "checkpoints/DeepSeek-V2-Lite-Chat"
    assert (cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.n_shared_experts) == (64, 6, 2)


def test_speech_lm_config_round_trip():
    cfg = tiny_config(loss=LossConfig(text_weight=0.5, audio_weights=(1, 2, 3), reduction="reference_mean"))
    assert SpeechLMConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "llama"}, "unknown backbone family"),
        ({"experts_implementation": "magic"}, "unknown experts_implementation"),
        ({"first_k_dense_replace": 4}, "leaves no MoE layer"),
        ({"num_experts_per_tok": 9}, "num_experts_per_tok=9"),
    ],
)
def test_bad_backbone_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BackboneConfig(**kwargs)


def test_unknown_keys_and_bad_loss_rejected():
    with pytest.raises(ValueError, match="unknown field"):
        BackboneConfig.from_dict({"hidden": 3})
    with pytest.raises(ValueError, match="unknown loss reduction"):
        LossConfig(reduction="mean")
    with pytest.raises(ValueError, match="2 entries for 3 audio streams"):
        LossConfig(audio_weights=(1.0, 1.0)).audio_weight(0, 3)
    with pytest.raises(ValueError, match="2 entries for 3 audio streams"):
        tiny_config(loss=LossConfig(audio_weights=(1.0, 1.0)))
