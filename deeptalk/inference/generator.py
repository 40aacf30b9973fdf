"""Batch-parallel text + delayed multi-stream audio decoding (paper.md §6), separate from the network.

The network (``SpeechLM``) maps ids to logits; this module decides what to feed it next, the way moshi's
``LMGen`` wraps ``LMModel``. For a spoken answer the prompt runs as a batch of two:

* item ``audio`` carries the answer token (``ANS_A`` or a voice) on every audio stream at the last prompt
  position and produces the audio codes;
* item ``text`` is the prompt as packed for a text answer (the reference keeps ``PAD_A`` there; this
  project's packing writes the text answer's task token, ``AQA`` or ``TQA``) and produces the text.

The sampled text token is written into both items. After the text's ``EOT`` the text item and its KV cache
are dropped and the audio item continues with ``PAD_T`` on the text stream. Audio stream ``i`` lags the text
by ``i + 1`` steps, so at step ``t`` streams ``i >= t`` are forced to ``PAD_A``; when stream 0 emits ``EOA`` at
step ``t0``, stream ``i`` is closed with ``EOA`` at step ``t0 + i``. Generation stops once every stream of the
surviving items has closed or ``max_steps`` is reached. Code ``j`` of stream ``i`` is produced at step
``j + i + 1``, so codec frame ``j`` is complete at step ``j + K``; :class:`StepOutput` carries it then.

A model trained on the aligned answer layout (``TokenLayout.answer_layout == "aligned"``, see
:mod:`deeptalk.data.packing`) speaks with one item: its text stream, read from the same logits as its audio,
produces words at the frames where they are spoken and ``PAD_T`` between them (a step whose text only pads
yields ``text_token=None``), then ``EOT``; generation ends once the text has ended and every stream has
closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch

from deeptalk.batch import AudioSegments, SpeechBatch
from deeptalk.inference.config import SamplingConfig
from deeptalk.inference.sampling import allowed_mask, apply_repetition_penalty, sample_top_k
from deeptalk.tokens import TokenLayout

log = logging.getLogger(__name__)


class SpeechNetwork(Protocol):
    """The part of ``deeptalk.model.SpeechLM`` the generator uses."""

    layout: TokenLayout

    def __call__(self, batch: SpeechBatch, cache: Any = None, use_cache: bool = False) -> Any: ...


@dataclass
class Prompt:
    """A packed prompt for one conversation (see :mod:`deeptalk.inference.prompt`).

    ``input_ids`` [T, S] ends with the answer-opening ``ASSISTANT`` position exactly as packing writes it
    for a text answer; the text item decodes from it unchanged. For a spoken answer the audio item is a
    copy whose last position carries the answer/voice token on every audio stream.
    """

    input_ids: torch.Tensor  # [T, S] global ids
    audio: AudioSegments | None = None  # user-audio segments of this one sequence (batch_index 0)


@dataclass
class StepOutput:
    """One decode step: the text token written at this position (None once the text has ended) and the
    codec frame completed by this step (codes ``[K]``) if any."""

    step: int
    text_token: int | None  # local text id, EOT included; None when the text stream only pads
    frame: torch.Tensor | None  # [K] codec codes of the frame completed at this step


@dataclass
class DecodeState:
    """Mutable per-answer state (moshi-style): which items are alive, per-stream progress."""

    cache: Any = None  # the KV cache when :class:`Generator` decodes alone (the scheduler keeps its own)
    step: int = 0  # the last step decoded
    items: list[str] = field(default_factory=list)  # names of the live batch items, in batch order
    text_tokens: list[int] = field(default_factory=list)  # local text ids generated so far (penalty history)
    codes: list[list[int]] = field(default_factory=list)  # per audio stream: codes generated (de-delayed)
    eoa_step: int | None = None  # step at which stream 0 emitted EOA
    text_item: str = "text"  # the item whose logits give the text ("audio" in the aligned layout)
    frames_emitted: int = 0
    length: int = 0  # positions in the cache
    reason: str = ""
    steps_taken: int = 0  # decode steps drawn so far (the next step's index)
    max_steps: int = 0
    rng: torch.Generator | None = None

    def reset(self) -> None:
        self.cache = None
        self.step = 0
        self.items = []
        self.text_tokens = []
        self.codes = []
        self.eoa_step = None
        self.text_item = "text"
        self.frames_emitted = 0
        self.length = 0
        self.reason = ""
        self.steps_taken = 0
        self.max_steps = 0
        self.rng = None


@dataclass
class Advance:
    """What one decode step gives: the client-facing output and, unless the answer has ended, which batch
    items go on (indices into the items before this step) and the ids they are fed next ``[len(keep), S]``."""

    output: StepOutput
    keep: list[int] | None = None  # None: the answer has ended (``state.reason`` says why)
    next_ids: torch.Tensor | None = None  # [len(keep), S] global ids, on the CPU


class Decoder:
    """The decoding rules of one answer, without the network: what each batch item is fed next given the
    logits it got. :class:`Generator` runs it alone; :class:`deeptalk.inference.scheduler.Scheduler` runs many
    in one batch. Both call :meth:`begin`, then per step :meth:`draw` (sampling on the model's device, no host
    sync) and :meth:`advance` (the drawn ids as host ints), so a sequence decodes the same either way."""

    def __init__(self, layout: TokenLayout, sampling: SamplingConfig, device: str | torch.device = "cpu"):
        self.layout = layout
        self.sampling = sampling
        self.device = torch.device(device)
        self.state = DecodeState()
        lay = layout
        K = lay.n_audio_streams
        self._eot = lay.text_special("EOT")
        self._pad_t = lay.text_special("PAD_T")
        self._pad_a_code = lay.audio_special_code("PAD_A")
        self._eoa_code = lay.audio_special_code("EOA")
        self._pad_a = [lay.audio_special("PAD_A", i) for i in range(K)]
        # the text stream may produce words and EOT
        self._text_mask = allowed_mask(
            lay.stream_size(lay.text_stream), [range(lay.text_vocab_size), self._eot], self.device
        )
        # aligned spoken answers: the text stream also pads between words
        self._aligned_text_mask = allowed_mask(
            lay.stream_size(lay.text_stream), [range(lay.text_vocab_size), self._eot, self._pad_t], self.device
        )
        # audio streams may produce codes; stream 0 also EOA (the others are closed by the schedule)
        self._audio_mask = torch.stack(
            [
                allowed_mask(
                    lay.audio_block_size, [range(lay.codebook_size)] + ([self._eoa_code] if i == 0 else [])
                )
                for i in range(K)
            ]
        ).to(self.device)
        self._none = torch.full((1 + K,), -1, dtype=torch.long, device=self.device)

    @property
    def done(self) -> bool:
        return bool(self.state.reason)

    def begin(
        self,
        prompt: Prompt,
        *,
        speak: bool,
        answer_code: int | None = None,
        max_steps: int,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Reset the state for a new answer; returns the prompt rows ``[B, T, S]`` (on the device) to prefill:
        the audio item (spoken answers) and the text item (unless the aligned layout reads text from audio)."""
        lay, st = self.layout, self.state
        st.reset()
        ids = prompt.input_ids.to(self.device)
        if ids.ndim != 2 or ids.shape[1] != lay.n_streams:
            raise ValueError(f"prompt ids must be [T, {lay.n_streams}], got {tuple(ids.shape)}")
        aligned = speak and lay.answer_layout == "aligned"
        rows = []
        if speak:
            code = lay.answer_code(None) if answer_code is None else answer_code
            rows.append(self._with_last_audio(ids, code))
            st.items.append("audio")
        if not aligned:  # the aligned layout's text comes from the audio item itself
            rows.append(ids)
            st.items.append("text")
        st.text_item = "audio" if aligned else "text"
        st.codes = [[] for _ in range(lay.n_audio_streams)]
        st.max_steps, st.rng = max_steps, rng
        return torch.stack(rows)

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        """Sample this step's tokens from the live items' last logits ``[B, V]``: ``[1 + K]`` local ids on
        the device (text, then the K audio streams; -1 where the item is gone or the text has ended)."""
        st, lay = self.state, self.layout
        out = self._none.clone()
        if st.text_item in st.items and not self._text_ended():
            row = logits[st.items.index(st.text_item), lay.stream_slice(lay.text_stream)].float()
            row = row + (self._aligned_text_mask if st.text_item == "audio" else self._text_mask)
            row = apply_repetition_penalty(
                row,
                torch.tensor(st.text_tokens, dtype=torch.long, device=row.device),
                self.sampling.text_repetition_penalty,
            )
            out[0] = sample_top_k(row, self.sampling.text_top_k, self.sampling.text_temperature)
        if "audio" in st.items:
            K = lay.n_audio_streams
            start = lay.stream_offset(0)  # the K audio blocks are contiguous and equally sized
            rows = logits[st.items.index("audio"), start : start + K * lay.audio_block_size].view(K, -1).float()
            out[1:] = sample_top_k(  # one draw for all K streams, delayed or not: the rng advances every step
                rows + self._audio_mask, self.sampling.audio_top_k, self.sampling.audio_temperature, st.rng
            )
        return out

    def advance(self, drawn: list[int]) -> Advance:
        """Apply one step's drawn ids (:meth:`draw`, as host ints): delay pads, staged EOA closure, the frame
        it completes, which items finish, and the ids each surviving item is fed next."""
        st, lay = self.state, self.layout
        t = st.step = st.steps_taken
        st.steps_taken += 1
        text_tok = self._take_text(drawn[0])
        audio_ids = self._take_audio(drawn[1:], t) if "audio" in st.items else None
        output = StepOutput(step=t, text_token=text_tok, frame=self._complete_frame())

        text_global = self._pad_t if text_tok is None else text_tok
        next_rows = [(audio_ids if name == "audio" else self._pad_a) + [text_global] for name in st.items]
        keep = [i for i, name in enumerate(st.items) if not self._finished(name, text_tok, t)]
        if not keep:
            st.reason = "complete"
            return Advance(output)
        st.items = [st.items[i] for i in keep]
        if st.steps_taken >= st.max_steps:
            st.reason = "max_steps"
            return Advance(output)
        return Advance(output, keep, torch.tensor([next_rows[i] for i in keep], dtype=torch.long))

    # ---- steps --------------------------------------------------------------------------------------------
    def _take_text(self, tok: int) -> int | None:
        """The drawn text token as the step's output (None when nothing was drawn, or, aligned, when it pads
        between words: the stream then carries ``PAD_T``)."""
        if tok < 0 or tok == self._pad_t:  # padding is not text: no history, nothing to emit
            return None
        self.state.text_tokens.append(tok)
        return self.layout.text_id(tok) if tok != self._eot else tok

    def _take_audio(self, sampled: list[int], t: int) -> list[int]:
        """Global ids for the K audio streams at step ``t``: delay pads, sampled codes, staged EOA closure."""
        st, lay = self.state, self.layout
        out = []
        for i in range(lay.n_audio_streams):
            if t <= i:  # delay: stream i starts at step i + 1
                local = self._pad_a_code
            elif st.eoa_step is not None and t > st.eoa_step + i:
                local = self._pad_a_code  # closed
            elif st.eoa_step is not None and t == st.eoa_step + i:
                local = self._eoa_code
            else:
                local = int(sampled[i])
                if local == self._eoa_code:  # only stream 0 may choose EOA; the others close after it
                    st.eoa_step = t
                else:
                    st.codes[i].append(local)
            out.append(lay.stream_offset(i) + local)
        return out

    def _complete_frame(self) -> torch.Tensor | None:
        st = self.state
        j = st.frames_emitted
        if not st.codes or any(len(c) <= j for c in st.codes):
            return None
        st.frames_emitted += 1
        return torch.tensor([c[j] for c in st.codes], dtype=torch.long)

    def _finished(self, item: str, text_tok: int | None, t: int) -> bool:
        st = self.state
        if item == "text":
            return text_tok is None or text_tok == self._eot
        # audio item: every stream has emitted its EOA (stream K-1 at eoa_step + K - 1), and, when it also
        # carries the text (aligned layout), the text has ended
        closed = st.eoa_step is not None and t >= st.eoa_step + self.layout.n_audio_streams - 1
        return closed and (st.text_item != "audio" or self._text_ended())

    def _text_ended(self) -> bool:
        return bool(self.state.text_tokens) and self.state.text_tokens[-1] == self._eot

    def _with_last_audio(self, ids: torch.Tensor, code: int) -> torch.Tensor:
        """Copy of ``ids`` with the last position's audio streams set to local audio special ``code``."""
        ids = ids.clone()
        for i in range(self.layout.n_audio_streams):
            ids[-1, i] = self.layout.stream_offset(i) + code
        return ids


class Generator:
    """Streams decode steps from a :class:`SpeechNetwork` for one prompt at a time, alone (the service batches
    many sessions' steps in :class:`deeptalk.inference.scheduler.Scheduler` instead).

    Stateless between calls except for ``state`` (reset on each :meth:`generate`), so one Generator belongs
    to one session; the network itself is shared read-only.
    """

    def __init__(self, model: SpeechNetwork, sampling: SamplingConfig, device: str | torch.device = "cpu"):
        self.model = model
        self.layout: TokenLayout = model.layout
        self.sampling = sampling
        self.device = torch.device(device)
        self.decoder = Decoder(self.layout, sampling, self.device)

    @property
    def state(self) -> DecodeState:
        return self.decoder.state

    @torch.inference_mode()
    def generate(
        self,
        prompt: Prompt,
        *,
        speak: bool,
        answer_code: int | None = None,
        max_steps: int,
        stop: threading.Event | None = None,
        rng: torch.Generator | None = None,
        deadline: float | None = None,
    ) -> Iterator[StepOutput]:
        """Decode an answer to ``prompt``; with ``speak`` produce audio in the voice ``answer_code``
        (``layout.answer_code(voice)``), else text only. Sets ``state.reason`` to ``complete``,
        ``max_steps``, ``interrupted`` or ``deadline`` when the iterator ends. ``stop`` and ``deadline``
        (a ``time.monotonic()`` value) are checked before every step."""
        dec, st = self.decoder, self.decoder.state
        rows = dec.begin(prompt, speak=speak, answer_code=answer_code, max_steps=max_steps, rng=rng)
        logits, st.cache = prefill(self.model, prompt, rows, self.device)
        st.length = rows.shape[1]
        if max_steps < 1:
            st.reason = "max_steps"
            return
        while True:
            if stop is not None and stop.is_set():
                st.reason = "interrupted"
                return
            if deadline is not None and time.monotonic() >= deadline:
                st.reason = "deadline"
                return
            n = len(st.items)
            step = dec.advance(dec.draw(logits).tolist())
            yield step.output
            if step.keep is None:
                return
            if len(step.keep) != n:
                st.cache.batch_select_indices(torch.tensor(step.keep, device=self.device))
            st.length += 1
            batch = SpeechBatch(
                input_ids=step.next_ids[:, None, :].to(self.device),
                attention_mask=torch.ones(len(st.items), st.length, dtype=torch.long, device=self.device),
            )
            out = self.model(batch, cache=st.cache, use_cache=True, logits="last")
            st.cache = out.cache
            logits = out.logits[:, -1]


def prefill(
    model: SpeechNetwork, prompt: Prompt, rows: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, Any]:
    """Run the prompt rows [B, T, S] (:meth:`Decoder.begin`); returns the last position's logits [B, V] and
    the filled KV cache.

    The batch items differ only in their last row, so the shared prefix runs once (batch 1) and its KV
    cache is repeated for every item before the last rows run as a batch: half the prefill work of a
    spoken answer, with the same result (see tests/inference/test_generator_model.py)."""
    b, t = rows.shape[:2]
    ones = partial(torch.ones, dtype=torch.long, device=device)
    segments = None if prompt.audio is None else prompt.audio.to(device)  # features arrive on the CPU
    shared = b > 1 and t > 1 and (segments is None or bool(((segments.start + segments.n_positions) < t).all()))
    if not shared:
        out = model(
            SpeechBatch(input_ids=rows, attention_mask=ones(b, t), audio=_replicate_segments(segments, b)),
            use_cache=True, logits="last",
        )
    else:
        head = model(
            SpeechBatch(input_ids=rows[:1, :-1], attention_mask=ones(1, t - 1), audio=segments), use_cache=True,
            logits="last",
        )
        head.cache.batch_repeat_interleave(b)
        out = model(
            SpeechBatch(input_ids=rows[:, -1:], attention_mask=ones(b, t)), cache=head.cache, use_cache=True,
            logits="last",
        )
    return out.logits[:, -1], out.cache


def _replicate_segments(seg: AudioSegments | None, n: int) -> AudioSegments | None:
    """The same user-audio segments for each of ``n`` batch items."""
    if seg is None or n == 1:
        return seg
    reps = seg.batch_index.numel()
    return AudioSegments(
        frames=seg.frames.repeat(n, 1, 1),
        n_positions=seg.n_positions.repeat(n),
        batch_index=torch.arange(n, device=seg.batch_index.device).repeat_interleave(reps),
        start=seg.start.repeat(n),
        frame_lengths=None if seg.frame_lengths is None else seg.frame_lengths.repeat(n),
    )


def undelay_frames(frames: list[torch.Tensor], n_streams: int) -> torch.Tensor:
    """Stack per-step frames [K] into codes [K, T] (the codec's layout)."""
    if not frames:
        return torch.zeros(n_streams, 0, dtype=torch.long)
    return torch.stack(frames, dim=1)
