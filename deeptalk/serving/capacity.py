"""How many answers a worker generates at once, and the loaded model the routes share.

``Capacity`` hands out ``max_concurrency`` slots; a request that finds none waits ``queue_timeout_s`` and is
then refused (503 + Retry-After). ``EngineHolder`` is set once by the service after load + warm-up; routes
answer 503 until then.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from deeptalk.inference.config import ServiceConfig
from deeptalk.inference.engine import Engine
from deeptalk.serving.errors import ApiError


class Busy(ApiError):
    """No generation slot freed up within the queue timeout (HTTP 503 + Retry-After)."""

    def __init__(self, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(
            503, "busy", f"server at capacity; retry after {retry_after_s} s", {"Retry-After": str(retry_after_s)}
        )


class Capacity:
    def __init__(self, max_concurrency: int, queue_timeout_s: float, retry_after_s: int):
        self.max_concurrency, self.queue_timeout_s, self.retry_after_s = (
            max_concurrency, queue_timeout_s, retry_after_s,
        )
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._active = 0
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: ServiceConfig) -> Capacity:
        return cls(config.max_concurrency, config.queue_timeout_s, config.retry_after_s)

    def acquire(self, timeout_s: float | None = None) -> None:
        """Take a slot; wait up to ``queue_timeout_s`` (or ``timeout_s``) or raise Busy."""
        if not self._slots.acquire(timeout=self.queue_timeout_s if timeout_s is None else timeout_s):
            raise Busy(self.retry_after_s)
        with self._lock:
            self._active += 1

    def release(self) -> None:
        with self._lock:
            self._active -= 1
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


class EngineHolder:
    """The served engine and its capacity; ``engine`` is None while the model loads."""

    def __init__(self, engine: Engine | None = None):
        self.capacity: Capacity | None = None
        self.engine = engine

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @engine.setter
    def engine(self, engine: Engine | None) -> None:
        self._engine = engine
        self.capacity = Capacity.for_config(engine.config) if engine is not None else None

    def get(self) -> Engine:
        if self._engine is None:
            raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": "5"})
        return self._engine
