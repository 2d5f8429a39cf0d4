"""Dynamic batching: requests for one model and one set of quantile levels are gathered up to ``max_batch`` rows
or ``max_wait`` seconds, run as one backend call in a worker thread, and split back row for row. A request
that arrives while no other is queued or running is not kept waiting: the wait applies only under concurrency.

Each request's history becomes its context ``[b, C, L]`` first (``Forecaster.context``: NaN filled, last L
points, short series padded) and is checked (``prepare``), on the caller's side, so one bad request is
answered 400 and never fails the batch it would have joined. The batch runs the concatenated contexts through
``Forecaster.forecast``; request k gets rows ``offset_k : offset_k + b_k`` of every output.

How a batch runs depends on the model (``ModelEntry.batching``, chosen at load): ``dynamic`` (one call on the
rows; the rows are bit-for-bit what each request alone gets), ``padded`` (the backend rounds differently at
different batch sizes, so every call runs exactly max_batch rows, padded with copies of the first: again the
same bits whatever the company) or ``per-request`` (Injective: one call per request in the batch, since a call
seeds its sampler and its generation is sequential per series anyway).

The queue is bounded (``max_queue`` requests): a full queue answers :class:`QueueFull` (HTTP 429 with
Retry-After) instead of growing without end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from alignts.errors import AlignTSError

log = logging.getLogger(__name__)


class QueueFull(AlignTSError):
    """The model's queue holds max_queue requests (HTTP 429)."""

    def __init__(self, msg: str, retry_after: float):
        super().__init__(msg)
        self.retry_after = retry_after


@dataclass
class Item:
    """One queued request: its context rows ``[b, C, L]`` (raw units, float64) and the future of its answer."""

    context: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return int(self.context.shape[0])


@dataclass(frozen=True)
class Result:
    """One request's share of a batch: mean, median [b, C, H], quantiles [b, C, H, Q] or None."""

    mean: np.ndarray
    median: np.ndarray
    quantiles: np.ndarray | None
    levels: tuple[float, ...]
    method: str
    batch_requests: int
    batch_rows: int


def run_batch(forecaster: Any, mode: str, contexts: list[np.ndarray], levels: tuple[float, ...] | None,
              max_batch: int) -> list[Result | BaseException]:
    """The backend side (a worker thread): forecast every request of a batch, split back per request."""
    if mode == "per-request":
        out: list[Result | BaseException] = []
        for c in contexts:
            try:
                fc = forecaster.forecast(c, quantiles=levels)
                out.append(_result(fc, 0, c.shape[0], len(contexts), c.shape[0]))
            except Exception as e:  # noqa: BLE001 - one request's failure is its own answer
                out.append(e)
        return out
    x = np.concatenate(contexts, axis=0) if len(contexts) > 1 else contexts[0]
    n = x.shape[0]
    if mode == "padded" and n % max_batch:
        x = np.concatenate([x, np.repeat(x[:1], max_batch - n % max_batch, axis=0)], axis=0)
    try:
        fc = forecaster.forecast(x, quantiles=levels)
    except Exception as e:  # noqa: BLE001
        return [e] * len(contexts)
    res, off = [], 0
    for c in contexts:
        res.append(_result(fc, off, c.shape[0], len(contexts), n))
        off += c.shape[0]
    return res


def _result(fc: Any, off: int, b: int, n_req: int, n_rows: int) -> Result:
    q = None if fc.quantiles is None else fc.quantiles[off:off + b]
    return Result(mean=fc.mean[off:off + b], median=fc.median[off:off + b], quantiles=q,
                  levels=tuple(fc.quantile_levels), method=fc.quantile_method, batch_requests=n_req,
                  batch_rows=n_rows)


class Batcher:
    """The queue and gather loop of one (model, quantile levels) key.

    call(items) runs in ``executor`` and returns one Result or exception per item (in order). ``slots`` bounds
    the batches of this key in flight at once (the server's worker count).
    """

    def __init__(self, key: tuple, call: Callable[[list[Item]], list], executor, max_batch: int, max_wait: float,
                 max_queue: int, batching: bool = True, slots: int = 1, on_batch: Callable | None = None):
        self.key, self.call, self.executor = key, call, executor
        self.max_batch, self.max_wait, self.max_queue = int(max_batch), float(max_wait), int(max_queue)
        self.batching = batching
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self._carry: Item | None = None
        self._slots = asyncio.Semaphore(max(1, int(slots)))
        self._inflight: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self.on_batch = on_batch
        self.batch_seconds = 0.05  # running mean of one backend call, for Retry-After
        self.outstanding = 0  # requests submitted and not yet answered (queued or in a running batch)

    @property
    def depth(self) -> int:
        return self.queue.qsize() + (self._carry is not None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.key}")

    def submit(self, context: np.ndarray) -> asyncio.Future:
        """Queue one request's context rows; its future resolves to a Result (or raises). QueueFull when full."""
        if self.depth >= self.max_queue:
            wait = max(1.0, self.depth / max(1, self.max_batch) * self.batch_seconds)
            raise QueueFull(f"model {self.key[0]!r}: {self.depth} requests are queued (the limit, --max-queue "
                            f"{self.max_queue}); retry after {wait:.0f} s or send fewer concurrent requests.",
                            retry_after=wait)
        self.start()
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Item(context=context, future=fut))
        self.outstanding += 1
        return fut

    async def _next(self, timeout: float | None) -> Item | None:
        """The next live item (a carried one first; cancelled ones, whose client left, are dropped)."""
        while True:
            if self._carry is not None:
                it, self._carry = self._carry, None
            elif timeout is None:
                it = await self.queue.get()
            else:
                try:
                    it = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(),
                                                                                              timeout)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    return None
            if not it.future.done():
                return it
            self.outstanding -= 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            first = await self._next(None)
            batch, rows = [first], first.rows
            deadline = loop.time() + self.max_wait
            # wait for company only when other requests are in flight: a lone caller is not kept waiting
            alone = self.outstanding == 1
            while self.batching and rows < self.max_batch:
                if alone and self.queue.empty():
                    break
                it = await self._next(deadline - loop.time())
                if it is None:
                    break
                if rows + it.rows > self.max_batch:
                    self._carry = it
                    break
                batch.append(it)
                rows += it.rows
            t = loop.create_task(self._run(batch))
            self._inflight.add(t)
            t.add_done_callback(self._inflight.discard)

    async def _run(self, batch: list[Item]) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.executor, self.call, batch)
        except Exception as e:  # noqa: BLE001 - the model could not be had (unknown, out of service, busy)
            results = [e] * len(batch)
        finally:
            self._slots.release()
        dt = time.perf_counter() - t0
        self.batch_seconds = 0.8 * self.batch_seconds + 0.2 * dt
        if self.on_batch is not None:
            self.on_batch(self.key, len(batch), sum(it.rows for it in batch), dt)
        self.outstanding -= len(batch)
        for it, r in zip(batch, results):
            if it.future.done():
                continue
            if isinstance(r, BaseException):
                it.future.set_exception(r)
            else:
                it.future.set_result(r)

    async def drain(self) -> None:
        """Wait until the queue is empty and no batch is in flight (graceful shutdown)."""
        while self.depth or self._inflight:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
