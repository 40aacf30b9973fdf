"""Importing a hub-layout DeepSeek-V2-Lite-Chat: layout from its embedding rows, head kept or tied (measured)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from deeptalk.data.packing import layout_for
from deeptalk.data.text_tokenizer import HFTextTokenizer
from deeptalk.evaluation.text_ability import collate_ids, source_agreement
from deeptalk.model.backbone import checkpoint_vocab_rows
from deeptalk.model.config import BackboneConfig, SpeechLMConfig
from deeptalk.model.freezing import apply_trainable
from deeptalk.model.switches import ParamGroup
from deeptalk.model.speech_lm import SpeechLM
from deeptalk.testing.mini_checkpoints import build_deepseek_v2_lite

from .conftest import AUDIO

SNAC = SimpleNamespace(n_streams=7, codebook_size=4096)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    return build_deepseek_v2_lite(tmp_path_factory.mktemp("lite") / "DeepSeek-V2-Lite-Chat")


@pytest.fixture(scope="module")
def tokenizer(lite):
    return HFTextTokenizer.load(lite)


def _texts(tokenizer):
    return [tokenizer.encode(t) for t in ("What is the capital of France?", "A spider has eight legs.",
                                         "Please repeat after me: the wood violet.")]


def _build(lite, tokenizer, head: str) -> SpeechLM:
    layout = layout_for(tokenizer, SNAC, text_rows=checkpoint_vocab_rows(lite))
    backbone = BackboneConfig(checkpoint=str(lite), head=head, experts_implementation="eager")
    torch.manual_seed(0)
    return SpeechLM.build(SpeechLMConfig(backbone, layout, AUDIO))


def test_deepseek_v2_lite_layout_is_the_references():
    """102,400 embedding rows (not the tokenizer's ~100 k) + SNAC 7 × 4096 → 102464 + 7 × 4160 = 131,584."""
    layout = layout_for(SimpleNamespace(vocab_size=100_015), SNAC, text_rows=102_400)
    assert (layout.text_block_size, layout.audio_block_size, layout.vocab_size) == (102_464, 4160, 131_584)
    assert layout.text_special("EOT") == 102_400 and layout.audio_id(0, 0) == 102_464
    with pytest.raises(ValueError, match="do not belong together"):
        layout_for(SimpleNamespace(vocab_size=102_401), SNAC, text_rows=102_400)


def test_the_mini_checkpoint_rows_not_its_tokenizer_size_make_the_text_block(lite, tokenizer):
    rows = checkpoint_vocab_rows(lite)
    assert tokenizer.vocab_size < rows
    model = _build(lite, tokenizer, "untied")
    assert model.layout.text_vocab_size == rows
    assert model.embed_tokens.weight.shape[0] == model.layout.vocab_size
    with pytest.raises(ValueError, match="text_rows"):  # the old layout (from len(tokenizer)) is refused
        SpeechLM.build(SpeechLMConfig(BackboneConfig(checkpoint=str(lite)), layout_for(tokenizer, SNAC), AUDIO))


def test_untied_head_reads_text_exactly_as_the_source(lite, tokenizer):
    model = _build(lite, tokenizer, "untied")
    result = source_agreement(model, lite, _texts(tokenizer))
    assert result["argmax_agreement"] == 1.0 and result["argmax_agreement_text_block"] == 1.0
    assert result["max_abs_logit_diff"] < 1e-2  # bf16 weights, same computation up to the experts kernel


def test_tied_head_loses_the_sources_predictions(lite, tokenizer):
    result = source_agreement(_build(lite, tokenizer, "tied"), lite, _texts(tokenizer))
    assert result["argmax_agreement"] < 0.5


def test_untied_head_round_trips_and_freezes_its_old_rows(tmp_path, lite, tokenizer):
    model = _build(lite, tokenizer, "untied")
    head, emb = model.backbone.get_output_embeddings().weight, model.embed_tokens.weight
    assert head is not emb and not model.backbone.config.tie_word_embeddings
    source = AutoModelForCausalLM.from_pretrained(lite, dtype=head.dtype).lm_head.weight
    assert torch.equal(head[: source.shape[0]], source)
    model.save_pretrained(tmp_path / "base")
    again = SpeechLM.from_pretrained(tmp_path / "base")
    assert torch.equal(again.backbone.get_output_embeddings().weight, head)
    assert again.backbone.get_output_embeddings().weight is not again.embed_tokens.weight

    model = model.float()
    apply_trainable(model, [ParamGroup.NEW_EMBEDDING_ROWS])
    model.train()
    ids = torch.tensor([[[*(model.layout.audio_special("PAD_A", s) for s in range(7)), i] for i in range(10)]])
    batch = dataclasses.replace(collate_ids(ids), labels=ids)
    model(batch).loss.backward()
    rows = model.layout.text_vocab_size
    for table in (head, emb):
        assert table.grad is not None and not table.grad[:rows].any()


def test_untied_text_export_keeps_the_head(tmp_path, lite, tokenizer):
    model = _build(lite, tokenizer, "untied")
    model.export_text_lm(tmp_path / "text")
    text = AutoModelForCausalLM.from_pretrained(tmp_path / "text", dtype=model.backbone.dtype)
    assert torch.equal(text.lm_head.weight, model.backbone.get_output_embeddings().weight[: model.layout.text_block_size])
