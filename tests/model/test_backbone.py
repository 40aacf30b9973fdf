"""Backbone loading: a DeepSeek-V2(-Lite)-format checkpoint (original config keys, one tensor per expert) loads."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

from deeptalk.model.backbone import moe_layers
from deeptalk.model.routers import MaskableDeepseekV2Router
from deeptalk.model.speech_lm import SpeechLM

from .conftest import LAYOUT, tiny_config

# The published DeepSeek-V2-Lite-Chat config.json, keys and values as released, with tiny sizes.
LITE_STYLE_CONFIG = {
    "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV2Config",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM"},
    "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 1,
    "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "kv_lora_rank": 16,
    "max_position_embeddings": 1024, "model_type": "deepseek_v2", "moe_intermediate_size": 16, "moe_layer_freq": 1,
    "n_group": 1, "n_routed_experts": 8, "n_shared_experts": 2, "norm_topk_prob": False, "num_attention_heads": 2,
    "num_experts_per_tok": 2, "num_hidden_layers": 3, "num_key_value_heads": 2, "pretraining_tp": 1,
    "q_lora_rank": None, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 1, "topk_method": "greedy", "torch_dtype": "float32",
    "transformers_version": "4.33.1", "use_cache": True, "v_head_dim": 8, "vocab_size": LAYOUT.text_vocab_size,
}


def _write_legacy_checkpoint(path) -> torch.nn.Module:
    """Write the reference's on-disk layout (``mlp.experts.{e}.{gate,up,down}_proj.weight``); return the model."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(LITE_STYLE_CONFIG))
    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).eval()
    tensors = {}
    for key, value in model.state_dict().items():
        prefix = key.rsplit(".", 1)[0]
        if key.endswith("experts.gate_up_proj"):
            inter = value.shape[1] // 2
            for e in range(value.shape[0]):
                tensors[f"{prefix}.{e}.gate_proj.weight"] = value[e, :inter].contiguous()
                tensors[f"{prefix}.{e}.up_proj.weight"] = value[e, inter:].contiguous()
        elif key.endswith("experts.down_proj"):
            for e in range(value.shape[0]):
                tensors[f"{prefix}.{e}.down_proj.weight"] = value[e].contiguous()
        else:
            tensors[key] = value.contiguous()
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in tensors
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return model


def test_deepseek_v2_lite_style_checkpoint_loads_unchanged(tmp_path):
    original = _write_legacy_checkpoint(tmp_path / "lite")
    model = SpeechLM.build(tiny_config(), base_checkpoint=tmp_path / "lite").eval()
    assert model.backbone.config.rope_parameters["rope_type"] == "yarn"
    assert all(isinstance(moe.router, MaskableDeepseekV2Router) for moe in moe_layers(model.backbone))
    ids = torch.randint(0, LAYOUT.text_vocab_size, (2, 9))
    with torch.no_grad():
        ours = model.backbone.model(inputs_embeds=model.embed_tokens(ids)).last_hidden_state
        ref = original.model(input_ids=ids).last_hidden_state
    assert torch.allclose(ours, ref, atol=1e-5)  # every layer, expert and router weight arrived intact


def test_bf16_training_cast_keeps_rope_in_fp32(tmp_path):
    """The cast the training loop applies for bf16 leaves RoPE's frequency table fp32 (what transformers' loader
    and DeepSpeed's bf16 engine keep), so long-distance rotations are pretraining's and serving's."""
    import copy

    from deeptalk.model.backbone import load_backbone
    from deeptalk.model.config import BackboneConfig
    from deeptalk.testing.mini_checkpoints import build_deepseek_v2_lite
    from deeptalk.training.loop import cast_for_training

    path = build_deepseek_v2_lite(tmp_path / "DeepSeek-V2-Lite-Chat")
    reference = load_backbone(path, BackboneConfig(family="deepseek_v2", checkpoint=str(path))).eval()
    model = copy.deepcopy(reference)
    cast_for_training(model, torch.bfloat16, "test")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    for name, buf in reference.named_buffers():
        assert model.get_buffer(name).dtype == buf.dtype
        assert torch.equal(model.get_buffer(name), buf), name

    def angles(m):
        x = torch.zeros(1, 3, 8)
        return m.model.rotary_emb(x, torch.tensor([[100, 500, 1200]])).angle()  # DeepSeek-V2: complex

    def phase_error(a, b):
        return (torch.remainder(a - b + torch.pi, 2 * torch.pi) - torch.pi).abs().max()

    assert phase_error(angles(model), angles(reference)) == 0
    naive = copy.deepcopy(reference).to(torch.bfloat16)  # what casting buffers too would give
    assert phase_error(angles(naive), angles(reference)) > 0.05  # the check above can see the fault

    ids = torch.randint(0, 400, (1, 512), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference(input_ids=ids).logits[0, -64:]
        got = model(input_ids=ids).logits[0, -64:].float()
    assert (got - want).norm() / want.norm() < 0.02  # bf16 weights: ~0.005 measured
