import threading

import pytest
import torch

from deeptalk.inference.config import SamplingConfig
from deeptalk.inference.generator import Generator, Prompt
from deeptalk.tokens import TokenLayout
from tests.inference.scripted import ScriptedNetwork

LAYOUT = TokenLayout(text_vocab_size=40, n_audio_streams=7, codebook_size=32, voices=("joe", "slt"))
GREEDY = SamplingConfig(audio_top_k=1)


def prompt(layout: TokenLayout, n: int = 5) -> Prompt:
    ids = torch.empty(n, layout.n_streams, dtype=torch.long)
    for i in range(layout.n_audio_streams):
        ids[:, i] = layout.audio_special("PAD_A", i)
    ids[:, layout.text_stream] = torch.arange(n) + 1
    return Prompt(input_ids=ids)


def run(net, **kw):
    gen = Generator(net, GREEDY)
    return gen, list(gen.generate(prompt(net.layout), **kw))


def expected_code(t: int, i: int) -> int:
    return (t * 7 + i) % LAYOUT.codebook_size


def test_spoken_answer_follows_delay_pattern_and_closes_streams_one_per_step():
    net = ScriptedNetwork(LAYOUT, text=[5, 6, 7], eoa_step=6)
    gen, steps = run(net, speak=True, max_steps=50)
    eot, K = LAYOUT.text_special("EOT"), LAYOUT.n_audio_streams
    assert [s.text_token for s in steps[:5]] == [5, 6, 7, eot, None]
    assert len(steps) == 6 + K  # stream K-1 closes at step eoa_step + K - 1
    assert gen.state.reason == "complete"
    # prompt: audio item has ANS_A on its last position, text item PAD_A
    assert net.calls[0].input_ids.shape[:2] == (1, 4)  # shared prefix prefilled once, then the last rows
    first = net.prompt_ids
    assert first.shape[0] == 2
    assert first[0, -1, 0] == LAYOUT.audio_special("ANS_A", 0)
    assert torch.equal(first[1], prompt(LAYOUT).input_ids)  # text item: the prompt unchanged
    # fed rows: stream i is PAD_A while t <= i (delay); text token written into both items
    for t, call in enumerate(net.decode_calls):
        row = call.input_ids[0, 0]
        for i in range(K):
            if t <= i:
                assert row[i] == LAYOUT.audio_special("PAD_A", i), (t, i)
            elif t == 6 + i:
                assert row[i] == LAYOUT.audio_special("EOA", i), (t, i)
            elif t < 6 + i:
                assert row[i] == LAYOUT.stream_offset(i) + expected_code(t, i), (t, i)
        if t <= 2:
            assert call.input_ids.shape[0] == 2
            assert (call.input_ids[:, 0, LAYOUT.text_stream] == steps[t].text_token).all()
        elif t == 3:  # EOT goes into the audio item; the text item is already gone
            assert call.input_ids.shape[0] == 1 and row[LAYOUT.text_stream] == LAYOUT.text_special("EOT")
        else:
            assert call.input_ids.shape[0] == 1  # text item dropped after EOT, with its cache
            assert row[LAYOUT.text_stream] == LAYOUT.text_special("PAD_T")
    assert net.decode_calls[0].input_ids[1, 0, :K].tolist() == [LAYOUT.audio_special("PAD_A", i) for i in range(K)]
    assert net.decode_calls[-1].input_ids.shape[0] == 1
    # frames: frame j completes at step j + K and holds code j of every stream (produced at step j + i + 1)
    frames = [(s.step, s.frame) for s in steps if s.frame is not None]
    assert [st for st, _ in frames] == [j + K for j in range(5)]
    for j, (_, frame) in enumerate(frames):
        assert frame.tolist() == [expected_code(j + i + 1, i) for i in range(K)]


def test_voice_token_opens_the_answer():
    net = ScriptedNetwork(LAYOUT, text=[5], eoa_step=3)
    run(net, speak=True, answer_code=LAYOUT.answer_code("slt"), max_steps=20)
    assert net.prompt_ids[0, -1, 3] == LAYOUT.audio_special("VOICE:slt", 3)


def test_text_only_answer_is_one_item_and_stops_at_eot():
    net = ScriptedNetwork(LAYOUT, text=[9, 8], eoa_step=None)
    gen, steps = run(net, speak=False, max_steps=20)
    assert [s.text_token for s in steps] == [9, 8, LAYOUT.text_special("EOT")]
    assert all(s.frame is None for s in steps)
    assert all(c.input_ids.shape[0] == 1 for c in net.calls)
    assert gen.state.reason == "complete"


def test_text_item_keeps_the_prompt_and_audio_item_gets_the_answer_token():
    net = ScriptedNetwork(LAYOUT, text=[3], eoa_step=2)
    gen = Generator(net, GREEDY)
    p = prompt(LAYOUT)
    p.input_ids[-1, :7] = torch.tensor([LAYOUT.audio_special("AQA", i) for i in range(7)])
    list(gen.generate(p, speak=True, max_steps=5))
    fed = net.prompt_ids
    assert torch.equal(fed[1], p.input_ids)
    assert fed[0, -1, 2] == LAYOUT.audio_special("ANS_A", 2) and torch.equal(fed[0, :-1], p.input_ids[:-1])


def test_audio_item_dropped_when_audio_closes_before_text():
    net = ScriptedNetwork(LAYOUT, text=list(range(1, 15)), eoa_step=2)
    gen, steps = run(net, speak=True, max_steps=30)
    K = LAYOUT.n_audio_streams
    assert net.decode_calls[1 + K].input_ids.shape[0] == 1  # after step eoa+K-1 only the text item runs
    assert net.decode_calls[1 + K].input_ids[0, 0, 0] == LAYOUT.audio_special("PAD_A", 0)
    assert steps[-1].text_token == LAYOUT.text_special("EOT") and gen.state.reason == "complete"
    assert len([s for s in steps if s.frame is not None]) == 1  # one code per stream before EOA


def test_max_steps_and_interrupt_end_generation():
    net = ScriptedNetwork(LAYOUT, text=list(range(1, 30)), eoa_step=None)
    gen, steps = run(net, speak=True, max_steps=10)
    assert len(steps) == 10 and gen.state.reason == "max_steps"

    stop = threading.Event()
    net = ScriptedNetwork(LAYOUT, text=list(range(1, 30)), eoa_step=None)
    gen = Generator(net, GREEDY)
    seen = []
    for s in gen.generate(prompt(LAYOUT), speak=True, max_steps=50, stop=stop):
        seen.append(s)
        if s.step == 2:
            stop.set()
    assert len(seen) == 3 and gen.state.reason == "interrupted"
    assert len(net.decode_calls) == 3  # no forward pass after the interrupt was seen


def test_bad_prompt_shape_is_rejected():
    gen = Generator(ScriptedNetwork(LAYOUT, text=[], eoa_step=None), GREEDY)
    with pytest.raises(ValueError, match="prompt ids"):
        list(gen.generate(Prompt(input_ids=torch.zeros(4, 3, dtype=torch.long)), speak=False, max_steps=3))
