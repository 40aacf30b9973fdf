"""Sequence packing: exact layout of the delay pattern, inverse, labels, truncation and random choices."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeptalk.data.config import PackingConfig
from deeptalk.data.packing import (
    AudioRef,
    answer_start,
    layout_for,
    load_layout,
    pack_prompt,
    pack_sample,
    pack_tokenized,
    save_layout,
    tokenize_sample,
    truncate,
    undelay,
)
from deeptalk.data.schema import Sample, Turn
from deeptalk.tokens import IGNORE_INDEX, TokenLayout


class WordTokenizer:
    """Stand-in for TextTokenizer: one id per distinct word, fixed vocabulary."""

    def __init__(self, words: list[str]):
        self.vocab = {w: i for i, w in enumerate(words)}
        self.vocab_size = len(words)

    def encode(self, text: str) -> list[int]:
        return [self.vocab[w] for w in text.split()]


WORDS = "what is the capital of france paris repeat hello world yes no one two three".split()
TOK = WordTokenizer(WORDS)


class FakeCodec:
    n_streams = 3
    codebook_size = 16


LAYOUT = layout_for(TOK, FakeCodec(), voices=("piper:joe",))


def spoken_qa(n_turns: int = 1, task: str = "aqa") -> Sample:
    turns = []
    for i in range(n_turns):
        turns.append(Turn("user", "what is the capital of france", audio_id=f"q{i}", speak=True))
        turns.append(Turn("assistant", "paris", audio_id=f"a{i}", speak=True))
    return Sample(id="s", task=task, split="train", turns=tuple(turns))


def codes_for(ids, k=3, t=4, seed=0):
    gen = np.random.default_rng(seed)
    return {i: gen.integers(0, 16, size=(k, t)) for i in ids}


def test_spoken_answer_rows_follow_the_delay_pattern():
    codes = {"a0": np.arange(12).reshape(3, 4) % 16}
    packed = pack_sample(spoken_qa(), LAYOUT, TOK, codes, {"q0": 2}, random.Random(0), train=False)
    L, ts = LAYOUT, LAYOUT.text_stream
    pad = [L.audio_special("PAD_A", s) for s in range(3)]
    # BOT, USER, BOA, 2 features, EOA, ASSISTANT+ANS_A, then the answer block
    assert packed.input_ids[0].tolist() == pad + [L.text_special("BOT")]
    assert packed.input_ids[1].tolist() == pad + [L.text_special("USER")]
    assert packed.input_ids[2, :3].tolist() == [L.audio_special("BOA", s) for s in range(3)]
    assert packed.input_ids[5, :3].tolist() == [L.audio_special("EOA", s) for s in range(3)]
    assert packed.input_ids[2:6, ts].tolist() == [L.text_special("AUDIO_PH")] * 4
    assert packed.audio == [AudioRef("q0", 3, 2, tuple(TOK.encode(spoken_qa().turns[0].text)))]  # + what was said
    p0 = answer_start(packed.input_ids, L)
    assert p0 == 6
    assert packed.input_ids[p0].tolist() == [L.audio_special("ANS_A", s) for s in range(3)] + [
        L.text_special("ASSISTANT")
    ]
    body = packed.input_ids[p0 + 1 :]
    # T codes + K + 1 = 4 + 3 + 1 rows; stream i: i+1 pads, 4 codes, EOA, pads
    assert body.shape == (8, 4)
    for i in range(3):
        col = [L.locate(int(x))[1] for x in body[:, i]]
        expect = ["PAD_A"] * (i + 1) + list(codes["a0"][i]) + ["EOA"] + ["PAD_A"] * (8 - 4 - i - 2)
        assert col == [e if isinstance(e, np.integer) else L.audio_special_code(e) for e in expect]
    assert body[:, ts].tolist() == [TOK.vocab["paris"], L.text_special("EOT")] + [L.text_special("PAD_T")] * 6
    # labels: prompt ignored, delay pads ignored, PAD_T ignored, codes + EOA + text + EOT labelled
    assert (packed.labels[: p0 + 1] == IGNORE_INDEX).all()
    lab = packed.labels[p0 + 1 :]
    assert lab[:, ts].tolist() == [TOK.vocab["paris"], L.text_special("EOT")] + [IGNORE_INDEX] * 6
    for i in range(3):
        assert (lab[: i + 1, i] == IGNORE_INDEX).all()
        assert (lab[i + 1 : i + 6, i] == body[i + 1 : i + 6, i]).all()
        assert (lab[i + 6 :, i] == IGNORE_INDEX).all()
    assert torch.equal(undelay(body, L), torch.as_tensor(codes["a0"]))


def test_voice_token_replaces_ans_a():
    sample = spoken_qa()
    packed = pack_sample(
        sample, LAYOUT, TOK, codes_for(["a0"]), {"q0": 3}, random.Random(0), voice_by_utt={"a0": "piper:joe"}
    )
    p0 = answer_start(packed.input_ids, LAYOUT)
    assert packed.input_ids[p0, :3].tolist() == [LAYOUT.audio_special("VOICE:piper:joe", s) for s in range(3)]


def test_text_answer_carries_asr_token_and_no_audio_labels():
    sample = Sample(
        "t",
        "asr",
        "train",
        (Turn("user", "hello world", audio_id="u", speak=True), Turn("assistant", "hello world")),
    )
    packed = pack_sample(sample, LAYOUT, TOK, {}, {"u": 5}, random.Random(0))
    p0 = answer_start(packed.input_ids, LAYOUT)
    assert packed.input_ids[p0, :3].tolist() == [LAYOUT.audio_special("ASR", s) for s in range(3)]
    assert (packed.labels[:, :3] == IGNORE_INDEX).all()
    assert packed.labels[p0 + 1 :, 3].tolist() == TOK.encode("hello world") + [LAYOUT.text_special("EOT")]
    assert len(packed) == p0 + 4


@pytest.mark.parametrize(
    ("task", "spoken", "token"), [("asr", True, "ASR"), ("rqa", True, "AQA"), ("rqa", False, "TQA"), ("tqa", False, "TQA")]
)
def test_text_answers_name_their_task(task, spoken, token):
    """Transcribing and answering must not look alike to the model: each opens with its own task token."""
    user = Turn("user", "hello world", audio_id="u" if spoken else None, speak=spoken)
    sample = Sample("t", task, "validation", (user, Turn("assistant", "hello")))
    packed = pack_sample(sample, LAYOUT, TOK, {}, {"u": 5}, random.Random(0), train=False)
    p0 = answer_start(packed.input_ids, LAYOUT)
    assert packed.input_ids[p0, :3].tolist() == [LAYOUT.audio_special(token, s) for s in range(3)]
    history = tokenize_sample(sample, TOK).turns[:-1]
    prompt = pack_prompt(history, LAYOUT, {"u": 5}, speak=False, task=task)
    assert np.array_equal(prompt.input_ids, packed.input_ids[: p0 + 1])


def test_multiturn_targets_only_last_turn_and_random_truncation_in_training():
    sample = spoken_qa(n_turns=3)
    codes = codes_for(["a0", "a1", "a2"])
    n_pos = {"q0": 2, "q1": 2, "q2": 2}
    ev = pack_sample(sample, LAYOUT, TOK, codes, n_pos, random.Random(1), train=False)
    assert [a.utt_id for a in ev.audio] == ["q0", "q1", "q2"]
    p0 = answer_start(ev.input_ids, LAYOUT)
    assert (ev.labels[:p0] == IGNORE_INDEX).all()  # earlier answers are context only
    assert torch.equal(undelay(ev.input_ids[p0 + 1 :], LAYOUT), torch.as_tensor(codes["a2"]))
    ends = set()
    for seed in range(30):
        tr = pack_sample(sample, LAYOUT, TOK, codes, n_pos, random.Random(seed), train=True)
        ends.add(tr.audio[-1].utt_id)
        last = tr.audio[-1].utt_id.replace("q", "a")
        p0 = answer_start(tr.input_ids, LAYOUT)
        assert torch.equal(undelay(tr.input_ids[p0 + 1 :], LAYOUT), torch.as_tensor(codes[last]))
    assert ends == {"q0", "q1", "q2"}


def test_text_only_conversation_labels_every_assistant_turn():
    turns = (
        Turn("system", "yes"),
        Turn("user", "one"),
        Turn("assistant", "two"),
        Turn("user", "three"),
        Turn("assistant", "no"),
    )
    packed = pack_sample(Sample("x", "tqa", "train", turns), LAYOUT, TOK, {}, {}, random.Random(0))
    text_labels = [int(x) for x in packed.labels[:, 3] if x != IGNORE_INDEX]
    eot = LAYOUT.text_special("EOT")
    assert text_labels == [TOK.vocab["two"], eot, TOK.vocab["no"], eot]
    assert packed.input_ids[1, 3] == LAYOUT.text_special("SYSTEM")


def test_rqa_user_turns_are_spoken_with_probability_p():
    sample = Sample("r", "rqa", "train", (Turn("user", "hello", audio_id="u"), Turn("assistant", "world")))
    spoken = sum(
        bool(pack_sample(sample, LAYOUT, TOK, {}, {"u": 2}, random.Random(s)).audio) for s in range(2000)
    )
    assert 0.66 < spoken / 2000 < 0.74
    never = PackingConfig(user_speech_prob=0.0)
    assert not pack_sample(sample, LAYOUT, TOK, {}, {"u": 2}, random.Random(0), config=never).audio
    # evaluation keeps the corpus's own choice
    assert not any(
        pack_sample(sample, LAYOUT, TOK, {}, {"u": 2}, random.Random(s), train=False).audio for s in range(20)
    )
    spoken_turns = (Turn("user", "hello", audio_id="u", speak=True), Turn("assistant", "world"))
    spoken_sample = Sample("r", "rqa", "validation", spoken_turns)
    assert all(
        pack_sample(spoken_sample, LAYOUT, TOK, {}, {"u": 2}, random.Random(s), train=False).audio
        for s in range(20)
    )


def test_same_rng_seed_gives_identical_packing():
    sample = Sample("r", "rqa", "train", spoken_qa(3).turns)
    codes, n_pos = codes_for(["a0", "a1", "a2"]), {"q0": 2, "q1": 3, "q2": 4}
    a = pack_sample(sample, LAYOUT, TOK, codes, n_pos, random.Random(7))
    b = pack_sample(sample, LAYOUT, TOK, codes, n_pos, random.Random(7))
    assert np.array_equal(a.input_ids, b.input_ids) and a.audio == b.audio


def test_too_long_conversations_drop_oldest_turns_then_cut():
    sample = spoken_qa(n_turns=3)
    codes, n_pos = codes_for(["a0", "a1", "a2"]), {"q0": 6, "q1": 6, "q2": 6}
    full = pack_sample(sample, LAYOUT, TOK, codes, n_pos, random.Random(0), train=False)
    short = pack_sample(
        sample,
        LAYOUT,
        TOK,
        codes,
        n_pos,
        random.Random(0),
        train=False,
        config=PackingConfig(max_length=len(full) - 5),
    )
    assert [a.utt_id for a in short.audio] == ["q1", "q2"]
    assert short.input_ids[1, 3] == LAYOUT.text_special("USER")  # window starts at a user turn
    tiny = pack_sample(
        sample, LAYOUT, TOK, codes, n_pos, random.Random(0), train=False, config=PackingConfig(max_length=8)
    )
    assert len(tiny) == 8 and [a[:3] for a in tiny.audio] == [("q2", 3, 5)]


def test_truncate_drops_segments_past_the_cut():
    sample = spoken_qa()
    packed = pack_sample(sample, LAYOUT, TOK, codes_for(["a0"]), {"q0": 4}, random.Random(0))
    assert truncate(packed, 2).audio == []
    assert truncate(packed, 100) is packed


def test_bad_inputs_raise_clear_errors():
    sample = spoken_qa()
    with pytest.raises(ValueError, match="no codec codes"):
        pack_sample(sample, LAYOUT, TOK, {}, {"q0": 2}, random.Random(0))
    with pytest.raises(ValueError, match="no input features"):
        pack_sample(sample, LAYOUT, TOK, codes_for(["a0"]), {}, random.Random(0))
    with pytest.raises(ValueError, match="outside the codebook"):
        pack_sample(sample, LAYOUT, TOK, {"a0": np.full((3, 2), 16)}, {"q0": 2}, random.Random(0))
    with pytest.raises(ValueError, match="shape"):
        pack_sample(sample, LAYOUT, TOK, {"a0": np.zeros((2, 2), dtype=int)}, {"q0": 2}, random.Random(0))
    with pytest.raises(ValueError, match="no assistant turn"):
        pack_sample(
            Sample("n", "tqa", "train", (Turn("user", "hello"),)), LAYOUT, TOK, {}, {}, random.Random(0)
        )
    small = TokenLayout(text_vocab_size=3, n_audio_streams=3, codebook_size=16)
    with pytest.raises(ValueError, match="text vocabulary"):
        pack_sample(sample, small, TOK, codes_for(["a0"]), {"q0": 2}, random.Random(0))
    with pytest.raises(ValueError, match="max_length"):
        PackingConfig(max_length=2)


def test_layout_round_trips_through_its_file(tmp_path):
    save_layout(LAYOUT, tmp_path)
    assert load_layout(tmp_path) == LAYOUT
    assert LAYOUT.text_vocab_size == len(WORDS) and LAYOUT.n_audio_streams == 3
    with pytest.raises(ValueError, match="pack step"):
        load_layout(tmp_path / "missing")


def test_undelay_returns_only_complete_frames():
    codes = np.arange(15).reshape(3, 5)
    packed = pack_sample(spoken_qa(), LAYOUT, TOK, {"a0": codes}, {"q0": 2}, random.Random(0))
    p0 = answer_start(packed.input_ids, LAYOUT)
    body = packed.input_ids[p0 + 1 :]
    partial = undelay(body[:5], LAYOUT)  # stream 2's first code sits at row 3: rows 3, 4 → 2 frames
    assert torch.equal(partial, torch.as_tensor(codes[:, :2]))


# ---- properties ---------------------------------------------------------------------------------------


@st.composite
def conversations(draw):
    k = draw(st.integers(1, 7))
    codebook = draw(st.sampled_from([4, 16, 4096]))
    layout = TokenLayout(
        text_vocab_size=len(WORDS), n_audio_streams=k, codebook_size=codebook, voices=("v1", "v2")
    )
    n_turns = draw(st.integers(1, 3))
    task = draw(st.sampled_from(["aqa", "rqa", "tqa", "asr", "tts"]))
    turns, codes, n_pos, voices = [], {}, {}, {}
    if draw(st.booleans()):
        turns.append(Turn("system", " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=4)))))
    for i in range(n_turns):
        words = " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=6)))
        user_audio = draw(st.booleans())
        turns.append(Turn("user", words, audio_id=f"u{i}" if user_audio else None, speak=user_audio))
        if user_audio:
            n_pos[f"u{i}"] = draw(st.integers(1, 9))
        answer = " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=12)))
        speak = draw(st.booleans())
        turns.append(Turn("assistant", answer, audio_id=f"a{i}" if speak else None, speak=speak))
        if speak:
            t = draw(st.integers(0, 12))
            codes[f"a{i}"] = np.asarray(
                draw(st.lists(st.integers(0, codebook - 1), min_size=k * t, max_size=k * t)), dtype=np.int64
            ).reshape(k, t)
            voices[f"a{i}"] = draw(st.sampled_from(["v1", "v2"]))
    sample = Sample("h", task, "train", tuple(turns))
    return layout, sample, codes, n_pos, voices, draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(conversations())
def test_packing_properties(case):
    layout, sample, codes, n_pos, voices, seed, train = case
    packed = pack_sample(
        sample, layout, TOK, codes, n_pos, random.Random(seed), train=train, voice_by_utt=voices
    )
    ids, labels = packed.input_ids, packed.labels
    assert ids.shape == labels.shape and ids.shape[1] == layout.n_streams
    # every id belongs to the stream it sits on
    for s in range(layout.n_streams):
        assert all(layout.locate(int(x))[0] == s for x in ids[:, s])
    # labels are aligned with inputs: either ignored or the input at the same position
    mask = labels != IGNORE_INDEX
    assert (labels[mask] == ids[mask]).all()
    assert mask.any()
    # the answer token row and un-delaying give back the codec codes of the spoken target
    p0 = answer_start(ids, layout)
    tokenized = tokenize_sample(sample, TOK, voices)
    rng = random.Random(seed)
    from deeptalk.data.packing import choose_target

    target = sample.turns[choose_target(tokenized, rng, train)]
    if target.speak:
        voice = voices[target.audio_id]
        assert ids[p0, : layout.n_audio_streams].tolist() == [
            layout.audio_special(f"VOICE:{voice}", s) for s in range(layout.n_audio_streams)
        ]
        assert torch.equal(undelay(ids[p0 + 1 :], layout), torch.as_tensor(codes[target.audio_id]))
    # user audio segments sit between BOA and EOA with AUDIO_PH on the text stream
    for ref in packed.audio:
        assert ref.n_positions == n_pos[ref.utt_id]
        assert layout.locate(int(ids[ref.start - 1, 0]))[1] == layout.audio_special_code("BOA")
        assert layout.locate(int(ids[ref.start + ref.n_positions, 0]))[1] == layout.audio_special_code("EOA")
        assert (ids[ref.start : ref.start + ref.n_positions, -1] == layout.text_special("AUDIO_PH")).all()
    # the same draw packs the same way through the tokenised path
    again = pack_tokenized(tokenized, layout, codes, n_pos, random.Random(seed), train=train)
    assert np.array_equal(again.input_ids, ids) and again.audio == packed.audio


def test_pack_prompt_equals_the_training_prefix():
    sample = Sample("p", "aqa", "validation", (Turn("system", "yes"),) + spoken_qa(n_turns=2).turns)
    codes, n_pos = codes_for(["a0", "a1"]), {"q0": 3, "q1": 2}
    packed = pack_sample(
        sample, LAYOUT, TOK, codes, n_pos, random.Random(0), train=False, voice_by_utt={"a1": "piper:joe"}
    )
    p0 = answer_start(packed.input_ids, LAYOUT)
    history = tokenize_sample(sample, TOK).turns[:-1]
    prompt = pack_prompt(history, LAYOUT, n_pos, speak=True, voice="piper:joe")
    assert np.array_equal(prompt.input_ids, packed.input_ids[: p0 + 1])
    assert prompt.audio == packed.audio and (prompt.labels == IGNORE_INDEX).all()
    text = pack_prompt(history, LAYOUT, n_pos, speak=False)
    assert text.input_ids[-1, :3].tolist() == [LAYOUT.audio_special("AQA", s) for s in range(3)]
    with pytest.raises(ValueError, match="end with a user turn"):
        pack_prompt(tokenize_sample(sample, TOK).turns, LAYOUT, n_pos, speak=True)
    with pytest.raises(ValueError, match="voice"):
        pack_prompt(history, LAYOUT, n_pos, speak=False, voice="piper:joe")
    short = pack_prompt(history, LAYOUT, n_pos, speak=True, max_length=10)
    assert [a.utt_id for a in short.audio] == ["q1"]
    assert len(short) == 1 + 2 + 5 + 1  # BOT, SYSTEM yes, the last spoken question, ASSISTANT row


def typed_qa() -> Sample:
    return Sample(id="t0", task="tqa", split="train",
                  turns=(Turn("user", "what is the capital of france"), Turn("assistant", "paris")))


def test_a_typed_question_drawn_as_heard_speech_reads_like_a_heard_spoken_turn():
    """TASU: with heard_text_prob 1 a typed question is packed as heard speech (BOA, its words on the text
    stream, EOA, no audio segment) and answered with the spoken-question token AQA; never at evaluation."""
    cfg = PackingConfig(heard_text_prob=1.0, heard_text_wer=0.0)
    heard = pack_sample(typed_qa(), LAYOUT, TOK, {}, {}, random.Random(0), train=True, config=cfg)
    typed = pack_sample(typed_qa(), LAYOUT, TOK, {}, {}, random.Random(0), train=True)
    L, ts = LAYOUT, LAYOUT.text_stream
    words = TOK.encode("what is the capital of france")
    assert heard.audio == []
    assert heard.input_ids[2, :3].tolist() == [L.audio_special("BOA", s) for s in range(3)]
    assert heard.input_ids[3 : 3 + len(words), ts].tolist() == words
    assert heard.input_ids[3 + len(words), :3].tolist() == [L.audio_special("EOA", s) for s in range(3)]
    assistant = L.marker("ASSISTANT")[0][-1]
    opens = [int(np.flatnonzero(p.input_ids[:, ts] == assistant)[-1]) for p in (heard, typed)]
    assert heard.input_ids[opens[0], 0] == L.audio_special("AQA", 0)
    assert typed.input_ids[opens[1], 0] == L.audio_special("TQA", 0)
    assert len(heard) == len(typed) + 2  # BOA and EOA
    evaluated = pack_sample(typed_qa(), LAYOUT, TOK, {}, {}, random.Random(0), train=False, config=cfg)
    assert evaluated.input_ids.tolist() == pack_sample(typed_qa(), LAYOUT, TOK, {}, {}, random.Random(0),
                                                       train=False).input_ids.tolist()


def test_simulated_word_errors_happen_at_about_the_asked_rate():
    from deeptalk.data.packing import simulate_word_errors

    rng = random.Random(0)
    ids = list(range(10, 20)) * 200
    heard = simulate_word_errors(ids, 0.3, rng, (4, 50))
    import jiwer

    rate = jiwer.wer(" ".join(map(str, ids)), " ".join(map(str, heard)))
    assert 0.25 < rate < 0.35
    assert simulate_word_errors(ids, 0.0, rng, (4, 50)) == tuple(ids)
