"""Dynamic batching: requests that arrive together share one forward pass.

One worker thread owns the model. Requests put their preprocessed images on a bounded queue and await
futures; the worker takes whatever is queued, up to ``max_batch`` images, waiting at most
``max_wait_ms`` after the oldest image arrived for more to come (Triton's ``max_queue_delay``): under
load the oldest has already waited through the previous batch, so batches fill without extra delay,
while a lone request is held no longer than ``max_wait_ms``. The queue is bounded in images: a request
that does not fit is refused at once (``QueueFull``, answered 503 with Retry-After) instead of waiting
without end.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class QueueFull(Exception):
    """The queue has no room for this request's images; try again after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BatcherStopped(Exception):
    """The server is shutting down and takes no new work."""


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future  # type: ignore[type-arg]
    loop: asyncio.AbstractEventLoop
    enqueued: float


class Batcher:
    """``await batcher.submit(images)`` -> logits, one row per image, computed in batches by one thread."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_wait_ms: float,
                 max_queue: int, on_batch: Callable[[int, float], None] | None = None) -> None:
        self.forward = forward
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_ms / 1e3, max_queue
        self.on_batch = on_batch
        self._items: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._seconds_per_image = 0.01  # a running estimate, for Retry-After

    @property
    def depth(self) -> int:
        """Images waiting for the model (not counting the batch it is running)."""
        return len(self._items)

    def start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="resnetkit-inference", daemon=True)
                self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Take nothing new, finish what is queued, end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    async def submit(self, images: list[np.ndarray]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Item(image, loop.create_future(), loop, now) for image in images]
        with self._cond:
            if self._stopping:
                raise BatcherStopped("the server is shutting down")
            if len(self._items) + len(items) > self.max_queue:
                wait = len(self._items) * self._seconds_per_image
                raise QueueFull(f"the inference queue is full ({len(self._items)} of {self.max_queue} images "
                                f"waiting); retry shortly", retry_after_s=max(1, round(wait + 0.5)))
            self._items.extend(items)
            self._cond.notify()
        return np.stack(await asyncio.gather(*(item.future for item in items)))

    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._items and not self._stopping:
                self._cond.wait()
            if not self._items:
                return None  # stopping, and everything queued is done
            deadline = self._items[0].enqueued + self.max_wait_s
            while len(self._items) < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(self.max_batch, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def _work(self) -> None:
        while (batch := self._take_batch()) is not None:
            # A client that went away cancelled its futures: do not spend the model on its images.
            batch = [item for item in batch if not item.future.cancelled()]
            if not batch:
                continue
            start = time.perf_counter()
            try:
                logits = self.forward(np.stack([item.image for item in batch]))
                outcome: list[object] = list(logits)
            except Exception as e:  # reported to each waiting request; the worker keeps serving
                outcome = [RuntimeError(f"inference failed: {type(e).__name__}: {e}")] * len(batch)
            elapsed = time.perf_counter() - start
            self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * elapsed / len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]] = {}  # type: ignore[type-arg]
            for item, result in zip(batch, outcome):
                by_loop.setdefault(item.loop, []).append((item.future, result))
            for loop, pairs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver, pairs)
                except RuntimeError:  # that event loop is closed: nobody waits for these any more
                    pass
            if self.on_batch is not None:
                self.on_batch(len(batch), elapsed)


def _deliver(pairs: list[tuple[asyncio.Future, object]]) -> None:  # type: ignore[type-arg]
    for future, result in pairs:
        if future.done():  # cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
