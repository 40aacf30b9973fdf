"""Inference prompts render exactly like the prefix of a packed training sequence."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from deeptalk.audio_input import AudioInputConfig
from deeptalk.data.features import LogMelExtractor
from deeptalk.data.packing import answer_start, pack_sample
from deeptalk.data.prompts import build_prompt
from deeptalk.data.schema import Sample, Turn
from deeptalk.tokens import IGNORE_INDEX, TokenLayout

WORDS = "what is the capital of france paris hello world".split()
CFG = AudioInputConfig(max_seconds=2.0)
LAYOUT = TokenLayout(text_vocab_size=len(WORDS), n_audio_streams=3, codebook_size=16, voices=("joe",))


class WordTokenizer:
    vocab_size = len(WORDS)

    def encode(self, text: str) -> list[int]:
        return [WORDS.index(w) for w in text.split()]


def wav(seconds: float) -> np.ndarray:
    return (0.2 * np.sin(np.arange(int(seconds * 16000)) / 9.0)).astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
    return LogMelExtractor(CFG)


def test_prompt_equals_training_prefix(extractor):
    turns = (
        Turn("system", "hello"),
        Turn("user", "what is the capital of france", "q0", True), Turn("assistant", "paris", "a0", True),
        Turn("user", "hello", "q1", True), Turn("assistant", "world", "a1", True),
    )
    audio = {"q0": (wav(0.8), 16000), "q1": (wav(0.4), 16000)}
    feats = {k: extractor(*v) for k, v in audio.items()}
    codes = {"a0": np.zeros((3, 4), dtype=int), "a1": np.ones((3, 2), dtype=int)}
    packed = pack_sample(Sample("s", "aqa", "validation", turns), LAYOUT, WordTokenizer(), codes,
                         {k: f.n_positions for k, f in feats.items()}, random.Random(0), train=False,
                         voice_by_utt={"a1": "joe"})
    p0 = answer_start(packed.input_ids, LAYOUT)
    batch = build_prompt(turns[:-1], LAYOUT, WordTokenizer(), CFG, audio=audio, voice="joe",
                         extractor=extractor)
    assert torch.equal(batch.input_ids[0], torch.from_numpy(packed.input_ids[: p0 + 1]))
    assert (batch.labels == IGNORE_INDEX).all() and batch.attention_mask.all()
    assert batch.audio.start.tolist() == [a.start for a in packed.audio]
    np.testing.assert_array_equal(batch.audio.mels[1].numpy(), feats["q1"].mel)


def test_text_answer_prompt_and_typed_question(extractor):
    turns = [Turn("user", "what is the capital of france")]
    batch = build_prompt(turns, LAYOUT, WordTokenizer(), CFG, speak=False, extractor=extractor)
    assert batch.audio is None
    last = batch.input_ids[0, -1]
    assert last[:3].tolist() == [LAYOUT.audio_special("ASR", s) for s in range(3)]
    assert last[3] == LAYOUT.text_special("ASSISTANT")
    spoken = build_prompt(turns, LAYOUT, WordTokenizer(), CFG, extractor=extractor)
    assert spoken.input_ids[0, -1, 0] == LAYOUT.audio_special("ANS_A", 0)


def test_prompt_errors_and_truncation(extractor):
    with pytest.raises(ValueError, match="end with a user turn"):
        build_prompt([Turn("assistant", "paris")], LAYOUT, WordTokenizer(), CFG, extractor=extractor)
    with pytest.raises(ValueError, match="not given"):
        build_prompt([Turn("user", "", "q9", True)], LAYOUT, WordTokenizer(), CFG, extractor=extractor)
    with pytest.raises(ValueError, match="voice"):
        build_prompt([Turn("user", "hello")], LAYOUT, WordTokenizer(), CFG, speak=False, voice="joe",
                     extractor=extractor)
    long = [Turn("user", "hello"), Turn("assistant", "world " * 20), Turn("user", "what is the capital")]
    batch = build_prompt(long, LAYOUT, WordTokenizer(), CFG, max_length=10, extractor=extractor)
    assert batch.input_ids.shape[1] == 1 + 1 + 4 + 1  # BOT, USER + 4 words, ASSISTANT row
