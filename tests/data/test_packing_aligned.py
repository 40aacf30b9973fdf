"""The aligned spoken-answer layout: text tokens at the frames where their words start, PAD_T between."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from deeptalk.data.config import PackingConfig
from deeptalk.data.packing import (
    TokenizedSample,
    TokenizedTurn,
    aligned_rows,
    answer_start,
    layout_for,
    pack_prompt,
    pack_tokenized,
    undelay,
)
from deeptalk.tokens import IGNORE_INDEX, TokenLayout

K, T = 3, 12  # audio streams, codec frames of the answer
TEXT_FIRST = TokenLayout(text_vocab_size=20, n_audio_streams=K, codebook_size=16, voices=("joe",))
ALIGNED = dataclasses.replace(TEXT_FIRST, answer_layout="aligned")
ANSWER = (5, 6, 7, 8)  # e.g. "paris is big ." : the last token is punctuation
FRAMES = np.array([1, 4, 4, 9])  # start frame of each token's word ("is" and "big" both start in frame 4)
CODES = np.random.default_rng(0).integers(0, 16, size=(K, T))


def sample(answer=ANSWER) -> TokenizedSample:
    turns = (
        TokenizedTurn("user", (1, 2, 3)),
        TokenizedTurn("assistant", tuple(answer), audio_id="a0", speak=True, voice="joe"),
    )
    return TokenizedSample("s", "tts", turns)


def pack(layout: TokenLayout, frames=FRAMES, answer=ANSWER):
    return pack_tokenized(
        sample(answer), layout, {"a0": CODES}, {}, random.Random(0), train=False,
        token_frames_by_utt=None if frames is None else {"a0": frames},
    )


def test_aligned_rows_start_at_the_word_frame_and_never_share_a_row():
    assert aligned_rows([1, 4, 4, 9]).tolist() == [1, 4, 5, 9]
    assert aligned_rows([0, 0, 0, 2]).tolist() == [0, 1, 2, 3]  # a number's digits follow each other
    assert aligned_rows([]).tolist() == []
    with pytest.raises(ValueError, match="non-negative"):
        aligned_rows([-1, 2])


def test_aligned_answer_puts_words_at_their_frames_with_pad_between_and_eot_after():
    packed = pack(ALIGNED)
    lay, ts = ALIGNED, ALIGNED.text_stream
    head = answer_start(packed.input_ids, lay)
    body, labels = packed.input_ids[head + 1 :], packed.labels[head + 1 :]
    pad_t, eot = lay.text_special("PAD_T"), lay.text_special("EOT")
    text = body[:, ts].tolist()
    expected = [pad_t] * len(text)
    for row, tok in zip([1, 4, 5, 9], ANSWER, strict=True):
        expected[row] = tok
    expected[10] = eot  # right after the last token
    assert text == expected
    # labels: every text row up to EOT (PAD_T between words included), nothing after it
    assert labels[:11, ts].tolist() == expected[:11]
    assert (labels[11:, ts] == IGNORE_INDEX).all()
    # the ASSISTANT row carries the voice token and no label
    assert packed.input_ids[head, 0] == lay.audio_special("VOICE:joe", 0)
    assert (packed.labels[: head + 1] == IGNORE_INDEX).all()
    # a word's text comes one row before stream 0's code of its start frame
    assert body[1 + 1, 0] == lay.stream_offset(0) + CODES[0, 1]


def test_audio_streams_are_the_same_in_both_layouts():
    aligned, text_first = pack(ALIGNED), pack(TEXT_FIRST)
    ha, ht = answer_start(aligned.input_ids, ALIGNED), answer_start(text_first.input_ids, TEXT_FIRST)
    assert ha == ht
    a_body, t_body = aligned.input_ids[ha + 1 :, :K], text_first.input_ids[ht + 1 :, :K]
    assert a_body.shape == t_body.shape == (T + K + 1, K)  # the audio, not the text, sets the length here
    assert np.array_equal(a_body, t_body)
    assert np.array_equal(aligned.labels[ha + 1 :, :K], text_first.labels[ht + 1 :, :K])
    assert np.array_equal(undelay(a_body, ALIGNED).numpy(), CODES)
    for i in range(K):  # EOA closes stream i after its i + 1 delay pads and T codes, and is a target
        assert a_body[i + 1 + T, i] == ALIGNED.audio_special("EOA", i)
        assert aligned.labels[ha + 1 + i + 1 + T, i] == ALIGNED.audio_special("EOA", i)


def test_text_first_layout_is_unchanged_by_the_option():
    packed = pack(TEXT_FIRST, frames=None)  # needs no timings
    ts, head = TEXT_FIRST.text_stream, answer_start(packed.input_ids, TEXT_FIRST)
    text = packed.input_ids[head + 1 :, ts].tolist()
    assert text[:5] == [*ANSWER, TEXT_FIRST.text_special("EOT")]
    assert set(text[5:]) == {TEXT_FIRST.text_special("PAD_T")}
    assert packed.labels[head + 1 : head + 6, ts].tolist() == text[:5]
    assert (packed.labels[head + 6 :, ts] == IGNORE_INDEX).all()


def test_text_longer_than_the_audio_extends_the_answer():
    answer = tuple(range(4, 4 + 9))
    frames = np.full(9, T - 1)  # every token starts in the last frame: rows T-1 … T+7, EOT at T+8
    packed = pack(ALIGNED, frames=frames, answer=answer)
    head = answer_start(packed.input_ids, ALIGNED)
    body = packed.input_ids[head + 1 :]
    assert len(body) == T + 9 > T + K + 1
    assert body[T - 1 : T + 8, ALIGNED.text_stream].tolist() == list(answer)
    assert body[T + 8, ALIGNED.text_stream] == ALIGNED.text_special("EOT")
    assert np.array_equal(undelay(body, ALIGNED).numpy(), CODES)


def test_prompt_is_the_same_for_both_layouts_and_is_the_training_prefix():
    turns = sample().turns[:1]
    prompts = [
        pack_prompt(turns, lay, {}, speak=True, voice="joe").input_ids for lay in (TEXT_FIRST, ALIGNED)
    ]
    assert np.array_equal(prompts[0], prompts[1])
    packed = pack(ALIGNED)
    head = answer_start(packed.input_ids, ALIGNED)
    assert np.array_equal(packed.input_ids[: head + 1], prompts[1])


def test_aligned_layout_needs_one_timing_per_token():
    with pytest.raises(ValueError, match="no word timings"):
        pack(ALIGNED, frames=None)
    with pytest.raises(ValueError, match="3 word timings for 4 text tokens"):
        pack(ALIGNED, frames=FRAMES[:3])


def test_unknown_answer_layout_is_rejected_by_name():
    with pytest.raises(ValueError, match="unknown answer_layout 'interleaved'"):
        PackingConfig(answer_layout="interleaved")
    with pytest.raises(ValueError, match="unknown answer_layout 'interleaved'"):
        TokenLayout(text_vocab_size=20, answer_layout="interleaved")
    with pytest.raises(ValueError, match="unknown answer_layout"):
        TokenLayout.from_dict({**TEXT_FIRST.to_dict(), "answer_layout": "Aligned"})


def test_layout_records_the_answer_layout_and_old_layouts_read_as_text_first():
    class Tok:
        vocab_size = 20

    class Codec:
        n_streams, codebook_size = K, 16

    layout = layout_for(Tok(), Codec(), ("joe",), answer_layout="aligned")
    assert layout == ALIGNED and TokenLayout.from_dict(layout.to_dict()) == ALIGNED
    old = {k: v for k, v in ALIGNED.to_dict().items() if k != "answer_layout"}
    assert TokenLayout.from_dict(old).answer_layout == "text_first"
