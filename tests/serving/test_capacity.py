"""Generation slots: up to max_concurrency at once, then a wait of queue_timeout_s, then Busy (503)."""

import pytest

from deeptalk.serving.capacity import Busy, Capacity, EngineHolder
from deeptalk.serving.errors import ApiError


def test_slots_queue_then_refuse():
    capacity = Capacity(max_concurrency=2, queue_timeout_s=0.05, retry_after_s=3)
    holders = [capacity.slot() for _ in range(2)]
    for h in holders:
        h.__enter__()
    try:
        assert capacity.active == 2
        with pytest.raises(Busy) as err:
            with capacity.slot():
                pass
        assert err.value.status == 503 and err.value.headers == {"Retry-After": "3"}
    finally:
        for h in holders:
            h.__exit__(None, None, None)
    with capacity.slot():
        assert capacity.active == 1
    assert capacity.active == 0


def test_holder_is_503_until_loaded_then_sized_by_the_config(engine):
    holder = EngineHolder()
    with pytest.raises(ApiError) as err:
        holder.get()
    assert err.value.status == 503 and holder.capacity is None
    holder.engine = engine
    assert holder.get() is engine and holder.capacity.max_concurrency == engine.config.max_concurrency


def test_the_queue_is_bounded_beyond_it_requests_are_refused_at_once():
    import threading
    import time

    capacity = Capacity(max_concurrency=1, queue_timeout_s=5.0, retry_after_s=1, max_queue=1)
    capacity.acquire()
    waiter = threading.Thread(target=lambda: (capacity.acquire(), capacity.release()))
    waiter.start()
    while capacity.waiting == 0:
        time.sleep(0.01)
    t0 = time.monotonic()
    with pytest.raises(Busy):
        capacity.acquire()  # the queue is full: no 5 s wait
    assert time.monotonic() - t0 < 1.0 and capacity.waiting == 1
    capacity.release()  # the queued request gets the slot
    waiter.join(5)
    assert capacity.active == 0 and capacity.waiting == 0
