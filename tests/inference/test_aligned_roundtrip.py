"""Packing ↔ generation round trip: a network that replays a packed spoken answer through the generator gives
back the answer's text and codes, and the generator feeds it exactly the rows training shows the model."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from deeptalk.batch import SpeechBatch
from deeptalk.data.packing import TokenizedSample, TokenizedTurn, answer_start, pack_prompt, pack_tokenized
from deeptalk.inference.config import SamplingConfig
from deeptalk.inference.generator import Generator, Prompt, undelay_frames
from deeptalk.tokens import TokenLayout
from tests.inference.scripted import ScriptedCache, ScriptedOutput

K, T = 4, 10
TEXT_FIRST = TokenLayout(text_vocab_size=30, n_audio_streams=K, codebook_size=16, voices=("joe",))
ALIGNED = dataclasses.replace(TEXT_FIRST, answer_layout="aligned")
ANSWER = (11, 12, 13, 14, 15)
FRAMES = np.array([0, 2, 2, 6, 6])
CODES = np.random.default_rng(1).integers(0, 16, size=(K, T))
GREEDY = SamplingConfig(audio_top_k=1, text_top_k=1, text_repetition_penalty=1.0)


@dataclass
class ReplayNetwork:
    """After the prompt, the logits at decode step ``t`` prefer, on every stream, the id of row ``t`` of
    ``answer`` (the packed answer block after the ASSISTANT row): a model that has learnt the packing."""

    layout: TokenLayout
    answer: np.ndarray  # [L, S] global ids
    prompt_len: int
    fed: list[torch.Tensor] = field(default_factory=list)  # rows fed after the prompt, per call [B, S]

    def __call__(self, batch: SpeechBatch, cache=None, use_cache=False, logits="all"):
        B, n, S = batch.input_ids.shape
        if cache is None:
            cache = ScriptedCache(B, n)
        else:
            cache.length += n
        if cache.length > self.prompt_len:
            self.fed.append(batch.input_ids[:, -1])
        t = cache.length - self.prompt_len  # the answer row these logits predict
        out = torch.full((B, 1, self.layout.vocab_size), -10.0)
        row = self.answer[min(t, len(self.answer) - 1)]
        for s in range(S):
            out[:, 0, int(row[s])] = 10.0
        return ScriptedOutput(logits=out, cache=cache)


def sample() -> TokenizedSample:
    return TokenizedSample(
        "s", "tts",
        (
            TokenizedTurn("user", (1, 2, 3)),
            TokenizedTurn("assistant", ANSWER, audio_id="a0", speak=True, voice="joe"),
        ),
    )


@pytest.mark.parametrize("layout", [ALIGNED, TEXT_FIRST], ids=["aligned", "text_first"])
def test_generator_recovers_the_packed_text_and_codes(layout):
    packed = pack_tokenized(
        sample(), layout, {"a0": CODES}, {}, random.Random(0), train=False, token_frames_by_utt={"a0": FRAMES}
    )
    head = answer_start(packed.input_ids, layout)
    prompt = pack_prompt(sample().turns[:1], layout, {}, speak=True, voice="joe").input_ids
    assert np.array_equal(prompt, packed.input_ids[: head + 1])  # the prompt is the training prefix
    answer = packed.input_ids[head + 1 :]
    net = ReplayNetwork(layout, answer, prompt_len=head + 1)
    gen = Generator(net, GREEDY)
    steps = list(
        gen.generate(
            Prompt(torch.from_numpy(prompt)), speak=True, answer_code=layout.answer_code("joe"), max_steps=100
        )
    )
    eot = layout.text_special("EOT")
    text = [s.text_token for s in steps if s.text_token is not None and s.text_token != eot]
    codes = undelay_frames([s.frame for s in steps if s.frame is not None], K)
    assert tuple(text) == ANSWER
    assert np.array_equal(codes.numpy(), CODES)
    assert gen.state.reason == "complete"
    # the audio item (batch index 0) was fed exactly the rows training shows, up to its last step
    fed = torch.stack([f[0] for f in net.fed]).numpy()
    assert np.array_equal(fed, answer[: len(fed)])
    assert len(steps) == len(answer)  # generation ends where the packed answer does
    if layout.answer_layout == "aligned":
        # text deltas come out at the frames where the words are spoken: one item, PAD_T steps give None
        rows = [s.step for s in steps if s.text_token is not None and s.text_token != eot]
        assert rows == [0, 2, 3, 6, 7]
        assert all(f.shape[0] == 1 for f in net.fed)
