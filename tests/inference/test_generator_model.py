"""The generator on a real (random, tiny) SpeechLM: shared-prefix prefill equals the plain batched prefill."""

import torch

from deeptalk.batch import SpeechBatch
from deeptalk.inference.config import SamplingConfig
from deeptalk.inference.generator import Generator, _replicate_segments, prefill
from deeptalk.inference.prompt import build_prompt
from deeptalk.data.packing import TokenizedTurn


def test_shared_prefix_prefill_matches_full_batch_prefill(engine, user_wav):
    mel, n_pos = engine.encode_audio(user_wav)
    turns = [TokenizedTurn("user", (5, 6)), TokenizedTurn("assistant", (7,)), TokenizedTurn("user", (), "a", True)]
    prompt = build_prompt(turns, engine.layout, {"a": mel}, {"a": n_pos}, 512)
    gen = Generator(engine.model, SamplingConfig(audio_top_k=1))
    rows = gen.decoder.begin(prompt, speak=True, answer_code=engine.layout.answer_code("joe"), max_steps=1)
    with torch.inference_mode():
        fast, cache = prefill(engine.model, prompt, rows, gen.device)
        full = engine.model(
            SpeechBatch(input_ids=rows, attention_mask=torch.ones(2, rows.shape[1], dtype=torch.long),
                        audio=_replicate_segments(prompt.audio, 2)),
            use_cache=True,
        ).logits[:, -1]
    assert cache.get_seq_length() == rows.shape[1]
    torch.testing.assert_close(fast, full, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fast[0], fast[1])  # the two items do differ in their last row
