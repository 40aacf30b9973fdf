"""Prometheus metrics of the speech service, served on BentoML's ``/metrics``.

The scheduler reports every step (:class:`~deeptalk.inference.scheduler.StepObserver`): sequences in the batch,
rows, answers waiting for their prefill, step time. The routes report admission (answers generating, requests
queued for a slot) and, per answer, first-audio latency and the gaps between audio chunks as the server
produced them. ``prometheus_client`` directly (BentoML 1.4 deprecates ``bentoml.metrics``); gauges sum over a
service's worker processes in BentoML's multiprocess mode.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

from prometheus_client import Gauge, Histogram

from deeptalk.inference.events import AudioChunk, Done, Event

# latency buckets (seconds): tens of ms for a tiny model on CPU up to the seconds of an overloaded worker
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


class ServiceMetrics:
    """The service's metric families (one instance per process: see :func:`service_metrics`)."""

    def __init__(self) -> None:
        self.sequences = Gauge(
            "deeptalk_batch_sequences", "answers in the scheduler's batch at its last step", multiprocess_mode="livesum"
        )
        self.prefill_queue = Gauge(
            "deeptalk_prefill_queue", "answers admitted and waiting for their prefill", multiprocess_mode="livesum"
        )
        self.generating = Gauge(
            "deeptalk_generating_answers", "answers holding a generation slot", multiprocess_mode="livesum"
        )
        self.queued = Gauge(
            "deeptalk_queued_requests", "requests waiting for a generation slot", multiprocess_mode="livesum"
        )
        self.batch_size = Histogram(
            "deeptalk_batch_size", "answers stepped together per scheduler step", buckets=BATCH_BUCKETS
        )
        self.batch_rows = Histogram(
            "deeptalk_batch_rows", "batch rows (a spoken answer has an audio and a text item) per step",
            buckets=BATCH_BUCKETS,
        )
        self.step_seconds = Histogram(
            "deeptalk_step_seconds", "wall time of one scheduler step (prefills, sampling, forward)",
            buckets=LATENCY_BUCKETS,
        )
        self.first_audio_seconds = Histogram(
            "deeptalk_first_audio_seconds", "end of the user's input to the first audio chunk",
            buckets=LATENCY_BUCKETS,
        )
        self.inter_chunk_seconds = Histogram(
            "deeptalk_inter_chunk_seconds", "time between consecutive audio chunks of one answer",
            buckets=LATENCY_BUCKETS,
        )

    # StepObserver
    def on_step(self, *, sequences: int, rows: int, waiting: int, seconds: float) -> None:
        self.sequences.set(sequences)
        self.prefill_queue.set(waiting)
        self.batch_size.observe(sequences)
        self.batch_rows.observe(rows)
        self.step_seconds.observe(seconds)

    def admission(self, *, generating: int, queued: int) -> None:
        self.generating.set(generating)
        self.queued.set(queued)

    def observe(self, events: Iterator[Event]) -> Iterator[Event]:
        """``events`` unchanged, timing the gaps between its audio chunks and recording the first-audio latency
        of its ``Done``."""
        last = None
        try:
            for event in events:
                if isinstance(event, AudioChunk):
                    now = time.perf_counter()
                    if last is not None:
                        self.inter_chunk_seconds.observe(now - last)
                    last = now
                elif isinstance(event, Done) and event.timings.first_audio_ms is not None:
                    self.first_audio_seconds.observe(event.timings.first_audio_ms / 1000.0)
                yield event
        finally:
            close = getattr(events, "close", None)  # a client gone: the answer's generator ends now, not at GC
            if close is not None:
                close()


@functools.cache
def service_metrics() -> ServiceMetrics:
    """This process's metrics (Prometheus names are registered once per process)."""
    return ServiceMetrics()
