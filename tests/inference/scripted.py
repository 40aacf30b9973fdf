"""A scripted stand-in network: its logits follow a fixed script, so decode-protocol tests can assert exact
positions (delay pads, EOA closure, item dropping). Model-level behaviour is tested with a real tiny SpeechLM."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deeptalk.batch import SpeechBatch
from deeptalk.tokens import TokenLayout


class ScriptedCache:
    def __init__(self, batch: int, length: int):
        self.batch, self.length = batch, length
        self.selected: list[list[int]] = []

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.selected.append(indices.tolist())
        self.batch = len(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.batch *= repeats


@dataclass
class ScriptedOutput:
    logits: torch.Tensor
    cache: ScriptedCache


@dataclass
class ScriptedNetwork:
    """Step t (0 = logits after the prompt) prefers text token ``text[t]`` (EOT after the script) and audio
    code ``(t * 7 + i) % codebook`` on stream i; stream 0 prefers EOA from step ``eoa_step`` on. The step is
    the number of positions past the ``prompt_len``-position prompt, so a split prefill is handled."""

    layout: TokenLayout
    text: list[int]
    eoa_step: int | None
    prompt_len: int = 5
    calls: list[SpeechBatch] = field(default_factory=list)
    decode_calls: list[SpeechBatch] = field(default_factory=list)  # [t] = what was fed after step t

    def __call__(self, batch: SpeechBatch, cache=None, use_cache=False, logits="all"):
        assert logits in ("all", "last"), "the generator only ever needs logits"
        self.calls.append(batch)
        B, T, _ = batch.input_ids.shape
        if cache is None:
            cache = ScriptedCache(B, T)
        else:
            cache.length += T
        assert cache.batch == B, "cache batch size must follow the input batch"
        t = cache.length - self.prompt_len  # decode step these logits are for (< 0: inside the prompt)
        if t >= 1:
            self.decode_calls.append(batch)
        lay = self.layout
        out = torch.zeros(B, T if logits == "all" else 1, lay.vocab_size)
        t = max(t, 0)
        tok = self.text[t] if t < len(self.text) else lay.text_special("EOT")
        out[:, -1, tok] = 10.0
        for i in range(lay.n_audio_streams):
            eoa = i == 0 and self.eoa_step is not None and t >= self.eoa_step
            code = lay.audio_special_code("EOA") if eoa else (t * 7 + i) % lay.codebook_size
            out[:, -1, lay.stream_offset(i) + code] = 10.0
        return ScriptedOutput(logits=out, cache=cache)

    @property
    def prompt_ids(self) -> torch.Tensor:
        """The full prompt each batch item saw [B, prompt_len, S], whether prefilled at once or split."""
        first = self.calls[0].input_ids
        if first.shape[1] == self.prompt_len:
            return first
        last = self.calls[1].input_ids  # shared prefix (batch 1) + the items' last rows
        return torch.cat([first.expand(last.shape[0], -1, -1), last], dim=1)
