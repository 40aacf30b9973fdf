"""Continuous batching: one loop steps every active answer of a model worker together.

Decoding a tiny or small model, or one sequence of a big one, is dispatch- and memory-bound: a step costs
about the same for 1 or 16 sequences. So the service does not give each conversation its own decode loop;
one :class:`Scheduler` thread owns the model and, every iteration,

1. drops answers that were cancelled (barge-in, a client gone) or ran past their deadline, before any model
   work is spent on them;
2. admits up to ``prefills_per_step`` waiting answers: each prompt is prefilled alone (it is the session's
   own prompt, built through the model's and prompt module's API, whatever its length) and its KV cache joins
   the batch;
3. draws every answer's tokens from its own logits with its own :class:`~deeptalk.inference.generator.Decoder`
   (delay pattern, sampling state, random generator), then copies all drawn ids to the host at once;
4. drops the items and answers that ended, and runs one forward pass for all remaining rows.

The batch KV cache is left-padded: row ``r`` holds its ``lengths[r]`` positions at the right end of the
``L`` slots, the attention mask hides the padding, and each row gets its own position ids, so a row attends
to exactly the keys and rotary positions it would see decoding alone (tests: batched and alone give
identical tokens). An answer that joins is padded to the batch's length (or the batch to its length);
leading slots that no row uses any more are cut when rows leave.

Per step the only host sync is the drawn ids (streamed tokens need them anyway); inputs, masks and positions
are built on the model's device, so the loop is the same on CUDA.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from deeptalk.batch import SpeechBatch
from deeptalk.inference.generator import Decoder, Prompt, StepOutput, prefill

log = logging.getLogger(__name__)

DEADLINE = "deadline"  # Done.reason of an answer stopped by its deadline


class StepObserver(Protocol):
    """Receives the scheduler's per-step figures (the service exports them as Prometheus metrics)."""

    def on_step(self, *, sequences: int, rows: int, waiting: int, seconds: float) -> None: ...


@dataclass(eq=False)
class _Job:
    decoder: Decoder
    prompt: Prompt
    rows: torch.Tensor  # [B, T, S] prompt rows from Decoder.begin
    stop: threading.Event
    deadline: float | None  # time.monotonic() by which it must end
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    logits: torch.Tensor | None = None  # [n_rows, V] of its live items, for the next draw
    next_ids: torch.Tensor | None = None  # [n_rows, S] on the CPU, fed at the next forward


_END = object()


class Scheduler:
    """Steps the answers of many sessions in one batch. ``generate`` is called from any thread (a session's);
    the model is only called by the scheduler's own thread (:meth:`start`), or by whoever calls :meth:`step`
    (tests drive it by hand).

    ``model`` must be a :class:`deeptalk.model.SpeechLM`: the batched step passes per-row position ids to its
    backbone, which its ``forward`` does not take.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str | torch.device = "cpu",
        prefills_per_step: int = 1,
        observer: StepObserver | None = None,
    ):
        if prefills_per_step < 1:
            raise ValueError(f"prefills_per_step must be >= 1, got {prefills_per_step}")
        self.model = model
        self.device = torch.device(device)
        self.prefills_per_step = prefills_per_step
        self.observer = observer
        self._waiting: list[_Job] = []
        self._active: list[_Job] = []  # in batch order; only the stepping thread touches it
        self._cond = threading.Condition()
        self._cache: Any = None
        self._lengths: list[int] = []  # positions of each batch row
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- clients ------------------------------------------------------------------------------------------
    def generate(
        self,
        decoder: Decoder,
        prompt: Prompt,
        *,
        speak: bool,
        answer_code: int | None = None,
        max_steps: int,
        stop: threading.Event | None = None,
        rng: torch.Generator | None = None,
        deadline: float | None = None,
    ) -> Iterator[StepOutput]:
        """Queue an answer; iterate to receive its steps as the batch produces them (the same steps
        :meth:`Generator.generate <deeptalk.inference.generator.Generator.generate>` gives alone).

        ``decoder.state.reason`` is set when the iterator ends: ``complete``, ``max_steps``, ``interrupted``
        (``stop`` was set, or the iterator was closed early) or ``deadline`` (``time.monotonic()`` passed
        ``deadline``). Bad prompts raise ValueError here, model errors from the iterator."""
        rows = decoder.begin(prompt, speak=speak, answer_code=answer_code, max_steps=max_steps, rng=rng)
        job = _Job(decoder, prompt, rows, stop if stop is not None else threading.Event(), deadline)
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._waiting.append(job)
            self._cond.notify()
        return self._receive(job)

    @staticmethod
    def _receive(job: _Job) -> Iterator[StepOutput]:
        try:
            while (item := job.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.stop.set()  # a consumer that stops reading frees the row at the next step

    @property
    def active(self) -> int:
        """Answers in the batch."""
        return len(self._active)

    @property
    def waiting(self) -> int:
        """Answers queued for their prefill."""
        with self._cond:
            return len(self._waiting)

    # ---- the loop -----------------------------------------------------------------------------------------
    def start(self) -> Scheduler:
        """Run the loop in a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="deeptalk-scheduler", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop; answers still running end as ``interrupted``."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        for job in [*self._active, *self._waiting]:
            self._finish(job, "interrupted")
        self._active, self._waiting = [], []
        self._reset_batch()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._active:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self.step()
            except Exception:  # step() already failed the answers concerned; the loop serves the next ones
                log.exception("scheduler step failed")

    @torch.inference_mode()
    def step(self) -> int:
        """One iteration (see the module docstring); returns the number of answers that took a step."""
        t0 = time.perf_counter()
        self._drop_stopped()
        self._admit()
        if not self._active:
            return 0
        jobs = self._active
        try:
            row = self._decode_step(jobs)
        except Exception as err:  # every answer of the batch gets the error; the next answers start afresh
            self._fail_all(err)
            raise
        if self.observer is not None:
            self.observer.on_step(
                sequences=len(jobs), rows=row, waiting=self.waiting, seconds=time.perf_counter() - t0
            )
        return len(jobs)

    def _decode_step(self, jobs: list[_Job]) -> int:
        """Draw and advance every answer, drop what ended, run the forward pass; returns the rows stepped."""
        drawn = torch.stack([job.decoder.draw(job.logits) for job in jobs]).tolist()  # the one host sync
        keep_rows: list[int] = []
        survivors: list[_Job] = []
        row = 0
        for job, ids in zip(jobs, drawn):
            n = len(job.decoder.state.items)
            step = job.decoder.advance(ids)
            job.out.put(step.output)
            if step.keep is None:
                self._finish(job)
            else:
                keep_rows.extend(row + i for i in step.keep)
                job.next_ids = step.next_ids
                survivors.append(job)
            row += n
        self._select(keep_rows, survivors)
        if survivors:
            self._forward()
        return row

    # ---- joining and leaving ------------------------------------------------------------------------------
    def _drop_stopped(self) -> None:
        now = time.monotonic()

        def ended(job: _Job) -> str | None:
            if job.stop.is_set():
                return "interrupted"
            if job.deadline is not None and now >= job.deadline:
                return DEADLINE
            return None

        with self._cond:
            waiting = []
            for job in self._waiting:
                reason = ended(job)
                if reason:
                    self._finish(job, reason)
                else:
                    waiting.append(job)
            self._waiting = waiting
        keep_rows, survivors, row = [], [], 0
        for job in self._active:
            n = len(job.decoder.state.items)
            reason = ended(job)
            if reason:
                self._finish(job, reason)
            else:
                keep_rows.extend(range(row, row + n))
                survivors.append(job)
            row += n
        if len(survivors) != len(self._active):
            self._select(keep_rows, survivors)

    def _admit(self) -> None:
        for _ in range(self.prefills_per_step):
            with self._cond:
                if not self._waiting:
                    return
                job = self._waiting.pop(0)
            try:
                logits, cache = prefill(self.model, job.prompt, job.rows, self.device)
            except Exception as err:  # e.g. a prompt the model refuses: only this answer fails
                job.out.put(err)
                self._finish(job, "error")
                continue
            job.logits = logits
            self._join(cache, job)

    def _join(self, cache: Any, job: _Job) -> None:
        rows = job.rows.shape[0]
        length = cache.get_seq_length()
        if self._cache is None:
            self._cache, self._lengths = cache, [length] * rows
        else:
            width = max(self._width(), length)
            _pad_left(self._cache, width - self._width())
            _pad_left(cache, width - length)
            for mine, theirs in zip(self._cache.layers, cache.layers):
                mine.keys = torch.cat([mine.keys, theirs.keys])
                mine.values = torch.cat([mine.values, theirs.values])
            self._lengths += [length] * rows
        self._active.append(job)

    def _select(self, keep_rows: list[int], survivors: list[_Job]) -> None:
        """Keep batch rows ``keep_rows`` (in order) for answers ``survivors``; cut slots no row uses."""
        self._active = survivors
        if not keep_rows:
            self._reset_batch()
            return
        if len(keep_rows) != len(self._lengths):
            self._cache.batch_select_indices(torch.tensor(keep_rows, device=self.device))
            self._lengths = [self._lengths[r] for r in keep_rows]
            unused = self._width() - max(self._lengths)
            if unused > 0:
                for layer in self._cache.layers:
                    layer.keys = layer.keys[..., unused:, :]
                    layer.values = layer.values[..., unused:, :]

    def _forward(self) -> None:
        """One position for every batch row: left-padded mask, per-row positions, one backbone pass."""
        model, device = self.model, self.device
        ids = torch.cat([job.next_ids for job in self._active]).to(device)[:, None, :]  # [R, 1, S]
        lengths = torch.tensor(self._lengths, device=device)  # [R]
        width = self._width() + 1
        mask = (torch.arange(width, device=device)[None, :] >= (width - 1 - lengths)[:, None]).long()  # [R, L+1]
        embeds = model.embed(SpeechBatch(input_ids=ids, attention_mask=mask[:, -1:]))
        out = model.backbone.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=lengths[:, None], cache=self._cache,
            use_cache=True,
        )
        head = model.backbone.get_output_embeddings().weight
        logits = out.last_hidden_state[:, -1] @ head.T  # [R, V], as SpeechLM.forward(logits="last")
        self._cache = out.cache
        self._lengths = [n + 1 for n in self._lengths]
        row = 0
        for job in self._active:
            n = len(job.decoder.state.items)
            job.logits = logits[row : row + n]
            row += n

    def _width(self) -> int:
        return 0 if self._cache is None else self._cache.get_seq_length()

    def _reset_batch(self) -> None:
        self._cache, self._lengths = None, []

    def _finish(self, job: _Job, reason: str | None = None) -> None:
        if reason is not None and reason != "error":
            job.decoder.state.reason = reason
        job.out.put(_END)

    def _fail_all(self, err: Exception) -> None:
        for job in self._active:
            job.out.put(err)
            job.out.put(_END)
        self._active = []
        self._reset_batch()


def _pad_left(cache: Any, n: int) -> None:
    """``n`` empty (masked) slots before every row's positions, in every layer of a DynamicCache."""
    if n <= 0:
        return
    for layer in cache.layers:
        layer.keys = F.pad(layer.keys, (0, 0, n, 0))
        layer.values = F.pad(layer.values, (0, 0, n, 0))
