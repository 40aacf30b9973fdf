"""SpeechLM: stock-equivalence, input embedding, losses, KV cache, save/load, HF checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

from deeptalk.batch import SpeechBatch
from deeptalk.model.config import LossConfig
from deeptalk.model.experts import ExpertSplit
from deeptalk.model.speech_lm import SpeechLM
from deeptalk.tokens import IGNORE_INDEX

from .conftest import AUDIO, LAYOUT, build_tiny, random_batch, tiny_config


def test_routing_none_matches_stock_deepseek_v2(model):
    """Maskable routers + wrapper add nothing: same logits as transformers' own model on the same weights."""
    model.eval()
    batch = random_batch()
    stock = DeepseekV2ForCausalLM(DeepseekV2Config(**model.backbone.config.to_dict())).eval()
    missing, unexpected = stock.load_state_dict(model.backbone.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    stock.tie_weights()
    with torch.no_grad():
        ours = model(batch).logits
        ref = stock(inputs_embeds=model.embed(batch)).logits
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert type(stock.model.layers[1].mlp.gate).__name__ == "DeepseekV2TopkRouter"


def test_input_is_mean_of_stream_embeddings_with_audio_spliced_in(model):
    batch = random_batch()
    emb = model.embed_tokens.weight
    k = LAYOUT.n_audio_streams
    with torch.no_grad():
        x = model.embed(batch)
        feats = model.projector(batch.audio.frames)[0]  # [4, H]
    assert torch.allclose(x[0, 3], emb[batch.input_ids[0, 3]].mean(0), atol=1e-6)
    for j, pos in enumerate(range(2, 6)):
        expected = (k * feats[j] + emb[LAYOUT.text_special("AUDIO_PH")]) / (k + 1)
        assert torch.allclose(x[1, pos], expected, atol=1e-6)
    assert torch.allclose(x[1, 6], emb[batch.input_ids[1, 6]].mean(0), atol=1e-6)


def test_stream_losses_are_shifted_ce_over_each_slice(model):
    batch = random_batch(audio=False)
    batch.labels[0, 4, 1] = IGNORE_INDEX
    out = model(batch)
    assert set(out.stream_losses) == {"text", "audio_0", "audio_1", "audio_2"}
    for stream, name in [(LAYOUT.text_stream, "text"), (1, "audio_1")]:
        sl = LAYOUT.stream_slice(stream)
        logits = model.stream_logits(out.logits, stream)[:, :-1]
        target = batch.labels[:, 1:, stream]
        local = torch.where(target == IGNORE_INDEX, target, target - sl.start)
        expected = F.cross_entropy(logits.reshape(-1, sl.stop - sl.start), local.reshape(-1), ignore_index=IGNORE_INDEX)
        assert torch.allclose(out.stream_losses[name], expected, atol=1e-6)
    assert torch.allclose(out.loss, sum(out.stream_losses.values()), atol=1e-6)  # eval: no aux loss


def test_loss_reductions_and_weights():
    batch = random_batch(audio=False)
    batch.labels[..., :LAYOUT.n_audio_streams] = IGNORE_INDEX  # text-only targets
    ref = build_tiny()
    ref.set_loss(LossConfig(reduction="reference_mean"))
    out = ref.eval()(batch)
    assert set(out.stream_losses) == {"text"}
    assert torch.allclose(out.loss, out.stream_losses["text"] / 2)  # the reference's (text + 0·state) / 2
    weighted = build_tiny()
    weighted.set_loss(LossConfig(text_weight=0.5, audio_weights=(1.0, 0.0, 2.0)))
    full = weighted.eval()(random_batch(audio=False))
    s = full.stream_losses
    assert torch.allclose(full.loss, 0.5 * s["text"] + s["audio_0"] + 2.0 * s["audio_2"], atol=1e-6)


def test_training_loss_adds_sequence_aux_loss(model):
    model.train()
    out = model(random_batch())
    assert out.aux_loss is not None and out.aux_loss > 0
    assert torch.allclose(out.loss, sum(out.stream_losses.values()) + out.aux_loss, atol=1e-6)
    out.loss.backward()
    assert model.projector.fc1.weight.grad.abs().sum() > 0  # gradient reaches the speech input path


def test_label_outside_its_stream_is_rejected(model):
    batch = random_batch(audio=False)
    batch.labels[0, 3, 0] = LAYOUT.audio_id(1, 0)  # stream-1 id on stream 0
    with pytest.raises(ValueError, match="audio_0"):
        model(batch)


def test_bad_audio_segments_are_rejected(model):
    batch = random_batch()
    batch.audio.start = torch.tensor([10])  # 10 + 4 > 12 positions
    with pytest.raises(ValueError, match="outside the batch"):
        model(batch)
    batch = random_batch()
    batch.audio.frames = batch.audio.frames[..., :-1]
    with pytest.raises(ValueError, match="encoder frames"):
        model(batch)


def test_the_encoder_is_frozen_and_encode_speech_matches_whisper_on_a_full_window(model):
    """``encode_trimmed`` is Whisper's own forward when the clip fills the window (and any even length works)."""
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())
    window = torch.randn(AUDIO.n_mels, AUDIO.mel_frames, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.audio_encoder(window[None]).last_hidden_state[0]
    assert torch.allclose(model.encode_speech(window), ref, atol=1e-5)
    assert model.encode_speech(window[:, :20]).shape == (10, AUDIO.encoder_dim)
    with pytest.raises(ValueError, match="even number"):
        model.encode_speech(window[:, :21])


def test_kv_cache_incremental_logits_equal_full_forward(model):
    model.eval()
    batch = random_batch(labels=False, t=10)
    with torch.no_grad():
        full = model(batch).logits
        prefix = SpeechBatch(batch.input_ids[:, :6], batch.attention_mask[:, :6], None, batch.audio)
        out = model(prefix, use_cache=True)
        steps = [out.logits]
        cache = out.cache
        for t in range(6, 10):
            step = SpeechBatch(batch.input_ids[:, t : t + 1], torch.ones(2, 1, dtype=torch.long))
            out = model(step, cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    assert cache.get_seq_length() == 10
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_output_router_logits_per_moe_layer(model):
    out = model(random_batch(), output_router_logits=True)
    assert len(out.router_logits) == len(model.moe_layers()) == 2
    assert all(r.shape == (24, 8) for r in out.router_logits)


def test_save_load_round_trip(tmp_path, model):
    split = ExpertSplit([[0, 1, 2, 3], [4, 5, 6, 7]])
    model.set_expert_split(split)
    model.set_loss(LossConfig(text_weight=2.0))
    model.eval()
    batch = random_batch()
    model.save_pretrained(tmp_path / "m")
    loaded = SpeechLM.from_pretrained(tmp_path / "m").eval()
    assert loaded.layout == LAYOUT and loaded.cfg == model.cfg
    assert loaded.expert_split == split
    assert loaded.backbone.lm_head.weight is loaded.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)
    meta = json.loads((tmp_path / "m" / "speech_lm.json").read_text())
    assert meta["config"]["layout"]["text_vocab_size"] == LAYOUT.text_vocab_size


def test_from_pretrained_rejects_plain_hf_dir(tmp_path):
    with pytest.raises(ValueError, match="not a SpeechLM directory"):
        SpeechLM.from_pretrained(tmp_path)


def test_build_from_hf_checkpoint_written_by_transformers(tmp_path):
    """A DeepSeek-V2 text checkpoint (untied head, like DeepSeek-V2-Lite) loads unchanged and is extended."""
    torch.manual_seed(3)
    cfg = tiny_config()
    hf = DeepseekV2Config(
        vocab_size=LAYOUT.text_vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, first_k_dense_replace=1, n_routed_experts=8, num_experts_per_tok=2,
        n_shared_experts=1, moe_intermediate_size=16, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
        qk_rope_head_dim=8, v_head_dim=8, max_position_embeddings=256, tie_word_embeddings=False,
    )
    text_lm = DeepseekV2ForCausalLM(hf)
    text_lm.save_pretrained(tmp_path / "base")
    model = SpeechLM.build(cfg, base_checkpoint=tmp_path / "base")
    emb = model.embed_tokens.weight
    assert emb.shape[0] == LAYOUT.vocab_size
    assert torch.equal(emb[: LAYOUT.text_vocab_size], text_lm.model.embed_tokens.weight)
    new = emb[LAYOUT.text_vocab_size :]
    assert 0.015 < float(new.detach().std()) < 0.025  # N(0, initializer_range)
    assert model.backbone.lm_head.weight is emb
    src = text_lm.state_dict()
    for name, value in model.backbone.state_dict().items():
        if "embed_tokens" not in name and "lm_head" not in name:
            assert torch.equal(value, src[name]), name


def test_build_rejects_checkpoint_larger_than_text_vocabulary(tmp_path):
    hf = DeepseekV2Config(
        vocab_size=LAYOUT.text_vocab_size + 1, hidden_size=32,  # one row more would overlap the text specials
        intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=16, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8,
        v_head_dim=8,
    )
    DeepseekV2ForCausalLM(hf).save_pretrained(tmp_path / "big")
    with pytest.raises(ValueError, match="text_rows"):
        SpeechLM.build(tiny_config(), base_checkpoint=tmp_path / "big")


def test_qwen2_moe_family_builds_and_masks():
    model = build_tiny(family="qwen2_moe").eval()
    batch = random_batch()
    model.set_routing("speech_only", ExpertSplit([[0, 1, 2], [5, 6, 7]]))
    with model.record_routing() as rec, torch.no_grad():
        out = model(batch)
    assert out.loss is not None and torch.isfinite(out.loss)
    assert set(rec.indices(1).unique().tolist()) <= {0, 1, 2}
    assert set(rec.indices(2).unique().tolist()) <= {5, 6, 7}


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    """Routers run the same ops with or without recording sinks, so recomputation matches the forward."""
    grads = []
    for checkpointing in (False, True):
        model = build_tiny(experts_implementation="sorted_mm")
        if checkpointing:
            model.backbone.gradient_checkpointing_enable()
        model.train()
        out = model(random_batch())
        out.loss.backward()
        moe = model.moe_layers()[0]
        grads.append((out.loss.detach(), moe.router.weight.grad.clone(), moe.experts.down_proj.grad.clone()))
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_right_padding_does_not_change_real_positions(model):
    batch = random_batch(audio=False, labels=False, t=12)
    short = SpeechBatch(batch.input_ids[:1, :7], torch.ones(1, 7, dtype=torch.long))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 7:] = 0
    with torch.no_grad():
        padded = model(SpeechBatch(batch.input_ids, mask)).logits
        alone = model(short).logits
    assert torch.allclose(padded[0, :7], alone[0], atol=1e-5)


@pytest.mark.parametrize("family", ["deepseek_v2", "qwen2_moe"])
def test_every_family_round_trips_through_a_transformers_checkpoint(tmp_path, family):
    """A SpeechLM's backbone dir is a plain transformers checkpoint: build() from it gives the same logits."""
    model = build_tiny(family=family).eval()
    model.save_pretrained(tmp_path / "m")
    again = SpeechLM.build(tiny_config(family=family), base_checkpoint=tmp_path / "m" / "backbone").eval()
    again.audio_encoder.load_state_dict(model.audio_encoder.state_dict())
    again.projector.load_state_dict(model.projector.state_dict())
    batch = random_batch()
    with torch.no_grad():
        assert torch.equal(model(batch).logits, again(batch).logits)
    with pytest.raises(ValueError, match="asks for"):
        SpeechLM.build(tiny_config(family="qwen2_moe" if family == "deepseek_v2" else "deepseek_v2"),
                       base_checkpoint=tmp_path / "m" / "backbone")


def test_text_export_is_a_plain_transformers_llm(tmp_path, model):
    model.export_text_lm(tmp_path / "text")
    text = DeepseekV2ForCausalLM.from_pretrained(tmp_path / "text").eval()
    assert text.config.vocab_size == LAYOUT.text_block_size
    assert type(text.model.layers[1].mlp.gate).__name__ == "DeepseekV2TopkRouter"
    ids = torch.randint(0, LAYOUT.text_vocab_size, (1, 8))
    with torch.no_grad():
        ours = model.backbone(inputs_embeds=model.embed_tokens(ids)).logits[..., : LAYOUT.text_block_size]
        assert torch.allclose(text(input_ids=ids).logits, ours, atol=1e-5)


def test_logits_modes_give_the_same_losses_and_gradients(model):
    batch = random_batch()
    model.train()
    reference = model(batch)
    reference.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    lean = model(batch, logits="none")
    lean.loss.backward()
    assert lean.logits is None
    torch.testing.assert_close(lean.loss, reference.loss, rtol=1e-5, atol=1e-6)
    assert lean.stream_losses.keys() == reference.stream_losses.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)
    model.eval()
    last = model(batch, logits="last").logits
    torch.testing.assert_close(last, model(batch).logits[:, -1:], rtol=1e-5, atol=1e-6)


def test_unknown_logits_mode_and_none_without_labels_are_rejected(model):
    with pytest.raises(ValueError, match="logits='some'"):
        model(random_batch(), logits="some")
    with pytest.raises(ValueError, match="needs labels"):
        model(random_batch(labels=False), logits="none")


def test_text_only_input_is_the_plain_text_llm(model):
    """text_only reads the text stream alone: the same logits as the exported text LM on the text ids."""
    batch = random_batch(audio=False, labels=False)
    ours = model(batch, text_only=True).logits
    text_ids = batch.input_ids[..., LAYOUT.text_stream]
    stock = model.backbone(input_ids=text_ids).logits
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, model(batch).logits), "the default input is the mean over all streams"
    with pytest.raises(ValueError, match="cannot carry user audio"):
        model(random_batch(), text_only=True)
