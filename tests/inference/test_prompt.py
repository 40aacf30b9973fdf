import random

import numpy as np
import pytest
import torch

from deeptalk.data.packing import TokenizedTurn, pack_sample
from deeptalk.data.schema import Sample, Turn
from deeptalk.inference.prompt import TaskPrompts, build_prompt
from deeptalk.tokens import TokenLayout


class Words:
    vocab = ["<pad>", "<unk>", "<bos>", "<eos>", "hello", "paris", "is", "where", "repeat"]
    vocab_size = len(vocab)

    def encode(self, text):
        return [self.vocab.index(w) if w in self.vocab else 1 for w in text.lower().split()]

    def decode(self, ids):
        return " ".join(self.vocab[i] for i in ids if i >= 4)


LAYOUT = TokenLayout(text_vocab_size=Words.vocab_size, n_audio_streams=3, codebook_size=8)


def test_prompt_is_the_training_packing_cut_after_the_assistant_row():
    tok = Words()
    sample = Sample(
        "s", "rqa", "train", (Turn("user", "where is paris", "q1", True), Turn("assistant", "paris"))
    )
    packed = pack_sample(sample, LAYOUT, tok, {}, {"q1": 4}, random.Random(0), train=False)
    frames = torch.randn(16, 6)
    p = build_prompt([TokenizedTurn("user", (7, 6, 5), "q1", True)], LAYOUT, {"q1": frames}, {"q1": 4}, 64)
    n = p.input_ids.shape[0]
    np.testing.assert_array_equal(p.input_ids.numpy(), packed.input_ids[:n])
    assert p.input_ids[-1, LAYOUT.text_stream] == LAYOUT.text_special("ASSISTANT")
    assert packed.input_ids[n, LAYOUT.text_stream] == tok.encode("paris")[0]  # the answer starts right after
    assert p.audio.start.tolist() == [packed.audio[0].start] and p.audio.n_positions.tolist() == [4]
    assert torch.equal(p.audio.frames[0], frames) and p.audio.batch_index.tolist() == [0]


def test_old_turns_are_dropped_and_an_oversized_turn_is_refused():
    turns = [
        TokenizedTurn("user", (4,) * 10),
        TokenizedTurn("assistant", (5,) * 10),
        TokenizedTurn("user", (6,)),
    ]
    p = build_prompt(turns, LAYOUT, {}, {}, 12)
    assert p.input_ids.shape[0] <= 12 and (p.input_ids[:, LAYOUT.text_stream] == 4).sum() == 0
    with pytest.raises(ValueError, match="does not fit"):
        build_prompt([TokenizedTurn("user", (4,) * 40)], LAYOUT, {}, {}, 12)
    with pytest.raises(ValueError, match="end with a user turn"):
        build_prompt(turns[:2], LAYOUT, {}, {}, 64)


def test_task_prompts_match_the_corpus_phrasing():
    tok = Words()
    tasks = TaskPrompts(tok)
    (turn,) = tasks.tts_turns(tok.encode("hello paris"))
    assert turn.role == "user" and tok.decode(turn.ids).startswith("repeat")
    audio_turn = TokenizedTurn("user", (), "u0", True)
    assert tasks.asr_turns(audio_turn) == [audio_turn]
    with pytest.raises(ValueError):
        tasks.asr_turns(TokenizedTurn("user", (4,)))
