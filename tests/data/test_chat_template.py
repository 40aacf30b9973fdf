"""Prompts in the imported LLM's own chat template (packing.prompt_format: chat_template)."""

from __future__ import annotations

import random

import pytest

from deeptalk.data.packing import answer_start, layout_for, pack_prompt, pack_tokenized, tokenize_sample
from deeptalk.data.schema import Sample, Turn
from deeptalk.data.text_tokenizer import HFTextTokenizer, TextTokenizer
from deeptalk.tokens import IGNORE_INDEX, ChatMarkers, TokenLayout
from deeptalk.testing.mini_checkpoints import build_bpe_tokenizer


class Codec:
    n_streams = 3
    codebook_size = 16


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_bpe_tokenizer(path)
    return HFTextTokenizer.load(path)


@pytest.fixture(scope="module")
def layout(tok):
    return layout_for(tok, Codec(), voices=("joe",), text_rows=512, chat=tok.chat_markers())


def _text(tok, layout, ids):
    return tok.tok.decode([int(i) for i in ids])


def test_markers_are_the_templates(tok):
    m = tok.chat_markers()
    decode = tok.tok.decode
    assert [decode(list(x)) for x in (m.bos, m.user, m.user_end, m.assistant, m.system_end)] == [
        "<｜begin▁of▁sentence｜>", "User: ", "\n\n", "Assistant: ", "\n\n"]
    assert decode([m.eot]) == "<｜end▁of▁sentence｜>" and m.eot == tok.eos_id


def test_a_typed_qa_reads_as_the_chat_template_renders_it(tok, layout):
    sample = Sample("s", "tqa", "train", (Turn("user", "What is the capital of France?"), Turn("assistant", "Paris.")))
    packed = pack_tokenized(tokenize_sample(sample, tok), layout, {}, {}, random.Random(0), train=False)
    text = packed.input_ids[:, layout.text_stream]
    rendered = tok.tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"},
                                            {"role": "assistant", "content": "Paris."}], tokenize=False)
    assert _text(tok, layout, text) == rendered
    labelled = packed.labels[:, layout.text_stream]
    assert _text(tok, layout, labelled[labelled != IGNORE_INDEX]) == "Paris.<｜end▁of▁sentence｜>"
    start = answer_start(packed.input_ids, layout)
    assert text[start] == layout.chat.assistant[-1]
    assert packed.input_ids[start, 0] == layout.audio_special("TQA", 0)
    assert (packed.input_ids[start - 1, :3] == [layout.audio_special("PAD_A", s) for s in range(3)]).all()


def test_a_spoken_question_sits_between_the_user_markers(tok, layout):
    turns = tokenize_sample(Sample("s", "aqa", "heldout", (Turn("user", "q", audio_id="u1", speak=True),)), tok).turns
    packed = pack_prompt(turns, layout, {"u1": 5}, speak=False)
    (ref,) = packed.audio
    ids = packed.input_ids
    assert ids[ref.start - 1, 0] == layout.audio_special("BOA", 0)
    assert (ids[ref.start: ref.start + 5, layout.text_stream] == layout.text_special("AUDIO_PH")).all()
    assert ids[ref.start + 5, 0] == layout.audio_special("EOA", 0)
    assert _text(tok, layout, ids[: ref.start - 1, layout.text_stream]) == "<｜begin▁of▁sentence｜>User: "
    tail = ids[ref.start + 6:, layout.text_stream]
    assert _text(tok, layout, tail) == "\n\nAssistant: " and answer_start(ids, layout) == len(ids) - 1
    assert ids[-1, 0] == layout.audio_special("AQA", 0)


def test_layout_round_trips_and_checks_its_markers(layout):
    assert TokenLayout.from_dict(layout.to_dict()) == layout
    assert layout.text_special("EOT") == layout.chat.eot  # the model's own end of answer
    assert "chat" not in TokenLayout(10).to_dict()  # layouts without markers serialise as before
    with pytest.raises(ValueError, match="text vocabulary"):
        TokenLayout(10, chat=ChatMarkers(bos=(0,), user=(1,), user_end=(), assistant=(2,), eot=10))
    with pytest.raises(ValueError, match="assistant marker"):
        ChatMarkers(bos=(), user=(), user_end=(), assistant=(), eot=1)


def test_a_word_tokenizer_has_no_chat_template():
    with pytest.raises(ValueError, match="hf_tokenizer"):
        TextTokenizer.build(["a b"]).chat_markers()
