"""Dynamic batching, as TF Serving's batching session does it.

Requests for one model version and signature wait in a queue; one batch at a time is taken
from it: the oldest request and every queued request that can join it, up to
``max_batch_size`` rows, waiting at most ``timeout_s`` for more to come (0: take what queued up
while the previous batch ran). The wait counts from when the batch could first run: the oldest
request's arrival, or the end of the previous call if that is later. (TF Serving counts from the
arrival alone, so under load, when requests have queued through a whole call, its timeout has
already run out and the batch takes only what queued; counting from the free model lets clients
answered by the previous call join the next batch.) The batch's inputs are concatenated along
the batch dimension, the SavedModel is called in a worker thread (never on the event loop), and
each request gets its own rows of every output back.

Length-sorted split (``split_rows`` > 0): a batch of at least ``2 * split_rows`` rows is run as
``rows // split_rows`` calls of about ``split_rows`` rows each, its requests grouped by input
length (the longest string in each request). A call pads every row to its longest, so on
mixed-length text (IMDB reviews: tens to hundreds of tokens) one call of 32 random reviews
costs more than two calls of 16 reviews of similar length. Off by default: it pays only where
lengths vary and the model's gain from larger batches has flattened.

What can be merged: inputs of rank 0 (the language model's ``max_length``, ``temperature``,
``top_k``; a translator's ``beam_width``, ``length_penalty``) hold one value for a whole call,
so only requests whose rank-0 inputs are all equal are merged; the others queue for later
batches of their own. Inputs of rank >= 2 (``tag_tokens``) are merged only with requests of the
same width, so nothing is re-padded. String outputs of rank >= 2 (a tagger's ``tokens``/``tags``,
padded with "") are cut back to the request's own width, so a merged response equals an unmerged
one; numeric outputs keep the merged batch's width, as TF Serving returns them.

If a merged call fails, each request is run again alone, so one bad request cannot fail the
requests it was batched with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Pending:
    inputs: dict  # name -> np.ndarray ([rows, ...] or a rank-0 array)
    rows: int
    key: tuple  # requests merge only with equal keys
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


def merge_key(inputs: dict, ranks: dict) -> tuple:
    """What must be equal for two requests to share a call: the rank-0 input values and the
    widths of rank >= 2 inputs."""
    key = []
    for name in sorted(inputs):
        value = inputs[name]
        if ranks[name] == 0:
            key.append((name, value.item()))
        elif ranks[name] >= 2:
            key.append((name, value.shape[1:]))
    return tuple(key)


def _trim_string_padding(value: np.ndarray) -> np.ndarray:
    """Cut axes 1.. of a string array to the last position holding a non-empty string (at least
    1), undoing the padding a longer request in the same batch added."""
    for axis in range(1, value.ndim):
        other = tuple(a for a in range(value.ndim) if a != axis)
        used = np.nonzero(np.any(value != b"", axis=other))[0]
        value = np.take(value, np.arange(int(used[-1]) + 1 if used.size else 1), axis=axis)
    return value


def _input_length(item: _Pending) -> int:
    """The longest string among a request's string inputs (0 if it has none): what its rows
    will be padded to, roughly."""
    return max((len(x) for value in item.inputs.values() if value.dtype == object
                for x in value.ravel()), default=0)


class Batcher:
    """Merges concurrent calls of one signature; see the module docstring.

    Args:
        call: numpy inputs -> numpy outputs (the signature), run in ``executor``.
        ranks: input name -> rank (0 = one value per call).
        on_batch: called with (rows, requests) after every model call (metrics).
        concurrency: batches in flight at once (TF Serving's ``num_batch_threads``).
        split_rows: run a batch of >= 2 * split_rows rows as length-sorted calls of about
            split_rows rows (0: one call per batch).
    """

    def __init__(self, call: Callable[[dict], dict], ranks: dict, max_batch_size: int,
                 timeout_s: float, executor, on_batch: Callable[[int, int], None],
                 concurrency: int = 1, split_rows: int = 0):
        self.call, self.ranks = call, ranks
        self.split_rows = split_rows
        self.max_batch_size, self.timeout_s = max_batch_size, timeout_s
        self.executor, self.on_batch, self.concurrency = executor, on_batch, concurrency
        self._queue: list[_Pending] = []
        self._arrival = asyncio.Event()
        self._free_since = 0.0  # monotonic time the previous call ended
        self._runners: set[asyncio.Task] = set()

    async def submit(self, inputs: dict, rows: int) -> dict:
        """This request's rows of every output (numpy arrays)."""
        pending = _Pending(inputs, rows, merge_key(inputs, self.ranks),
                           asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._arrival.set()
        # Runners end when the queue is empty, so an unloaded version leaves no task behind.
        self._runners = {task for task in self._runners if not task.done()}
        if len(self._runners) < self.concurrency:
            self._runners.add(asyncio.create_task(self._run()))
        return await pending.future

    def _joinable(self, first: _Pending) -> list[_Pending]:
        batch, rows = [], 0
        for item in self._queue:
            if item.key == first.key and (not batch or rows + item.rows <= self.max_batch_size):
                batch.append(item)
                rows += item.rows
        return batch

    async def _run(self) -> None:
        while self._queue:
            first = self._queue[0]
            while self.timeout_s > 0:
                could_run = max(first.arrived, self._free_since)
                remaining = could_run + self.timeout_s - time.monotonic()
                if remaining <= 0 or sum(i.rows for i in self._joinable(first)) \
                        >= self.max_batch_size:
                    break
                self._arrival.clear()
                try:
                    await asyncio.wait_for(self._arrival.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._joinable(first)
            if not batch:  # another runner took them while this one waited
                continue
            taken = {id(item) for item in batch}
            self._queue = [item for item in self._queue if id(item) not in taken]
            for group in self._groups(batch):
                await self._execute(group)
            self._free_since = time.monotonic()

    def _groups(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """The calls one batch runs as: itself, or (``split_rows``) length-sorted groups of
        about ``split_rows`` rows, shortest first."""
        rows = sum(item.rows for item in batch)
        if not self.split_rows or rows < 2 * self.split_rows:
            return [batch]
        parts = rows // self.split_rows
        groups, current, done = [], [], 0
        for item in sorted(batch, key=_input_length):
            current.append(item)
            done += item.rows
            if len(groups) < parts - 1 and done >= (len(groups) + 1) * rows / parts:
                groups.append(current)
                current = []
        return groups + [current] if current else groups

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        inputs = batch[0].inputs if len(batch) == 1 else {
            name: value if self.ranks[name] == 0
            else np.concatenate([item.inputs[name] for item in batch])
            for name, value in batch[0].inputs.items()}
        rows = sum(item.rows for item in batch)
        try:
            outputs = await loop.run_in_executor(self.executor, self.call, inputs)
        except Exception as exc:
            self.on_batch(rows, len(batch))
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            for item in batch:  # isolate the request that broke the merged call
                await self._execute([item])
            return
        self.on_batch(rows, len(batch))
        start = 0
        for item in batch:
            part = {}
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != rows:
                    part[name] = value  # not batched (no signature here has such an output)
                    continue
                value = value[start:start + item.rows]
                if len(batch) > 1 and value.dtype == object and value.ndim >= 2:
                    value = _trim_string_padding(value)
                part[name] = value
            start += item.rows
            if not item.future.done():  # a client that went away cancelled its future
                item.future.set_result(part)
