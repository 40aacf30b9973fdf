"""How many answers a worker generates at once, and the loaded model the routes share.

``Capacity`` hands out ``max_concurrency`` slots (with batching: the scheduler's batch size); up to ``max_queue``
requests that find none wait ``queue_timeout_s`` for one, the rest are refused at once (503 + Retry-After).
``EngineHolder`` is set once by the service after load + warm-up; routes answer 503 until then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from deeptalk.inference.config import ServiceConfig
from deeptalk.inference.engine import Engine
from deeptalk.inference.events import Event
from deeptalk.serving.errors import ApiError
from deeptalk.serving.metrics import ServiceMetrics


class Busy(ApiError):
    """No generation slot freed up within the queue timeout (HTTP 503 + Retry-After)."""

    def __init__(self, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(
            503, "busy", f"server at capacity; retry after {retry_after_s} s", {"Retry-After": str(retry_after_s)}
        )


class Capacity:
    def __init__(
        self,
        max_concurrency: int,
        queue_timeout_s: float,
        retry_after_s: int,
        max_queue: int | None = None,
        on_change: Callable[..., None] | None = None,
    ):
        self.max_concurrency, self.queue_timeout_s, self.retry_after_s = (
            max_concurrency, queue_timeout_s, retry_after_s,
        )
        self.max_queue = max_queue  # None: no bound on waiting requests
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._active = 0
        self._waiting = 0
        self._lock = threading.Lock()
        self._on_change = on_change  # called as on_change(generating=..., queued=...) after every change

    @classmethod
    def for_config(cls, config: ServiceConfig, on_change: Callable[..., None] | None = None) -> Capacity:
        return cls(
            config.max_concurrency, config.queue_timeout_s, config.retry_after_s, config.max_queue, on_change
        )

    def _changed(self) -> None:  # under self._lock
        if self._on_change is not None:
            self._on_change(generating=self._active, queued=self._waiting)

    def acquire(self, timeout_s: float | None = None) -> None:
        """Take a slot; when none is free, queue (if fewer than ``max_queue`` wait) for up to ``queue_timeout_s``
        (or ``timeout_s``); raise Busy otherwise."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self.max_queue is not None and self._waiting >= self.max_queue:
                    raise Busy(self.retry_after_s)
                self._waiting += 1
                self._changed()
            try:
                got = self._slots.acquire(timeout=self.queue_timeout_s if timeout_s is None else timeout_s)
            finally:
                with self._lock:
                    self._waiting -= 1
                    self._changed()
            if not got:
                raise Busy(self.retry_after_s)
        with self._lock:
            self._active += 1
            self._changed()

    def release(self) -> None:
        with self._lock:
            self._active -= 1
            self._changed()
        self._slots.release()

    @contextmanager
    def slot(self, timeout_s: float | None = None) -> Iterator[None]:
        """``acquire`` … ``release`` around a block."""
        self.acquire(timeout_s)
        try:
            yield
        finally:
            self.release()

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        with self._lock:
            return self._waiting


class EngineHolder:
    """The served engine and its capacity; ``engine`` is None while the model loads. ``metrics`` (the service's
    Prometheus families) follow admission when given."""

    def __init__(self, engine: Engine | None = None, metrics: ServiceMetrics | None = None):
        self.capacity: Capacity | None = None
        self.metrics = metrics
        self.engine = engine

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @engine.setter
    def engine(self, engine: Engine | None) -> None:
        self._engine = engine
        on_change = self.metrics.admission if self.metrics is not None else None
        self.capacity = Capacity.for_config(engine.config, on_change) if engine is not None else None

    def get(self) -> Engine:
        if self._engine is None:
            raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": "5"})
        return self._engine

    def observe(self, events: Iterator[Event]) -> Iterator[Event]:
        """An answer's events, timed by the metrics when there are any."""
        return events if self.metrics is None else self.metrics.observe(events)
