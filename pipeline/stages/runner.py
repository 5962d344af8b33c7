"""The threaded runner that joins a frame source and stages with bounded queues."""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterable, Iterator, Optional

from ..frames import FrameBatch

_END = object()


class Pipeline:
    """Runs a frame source and stages in threads joined by bounded queues; iterate it for the
    finished batches. Decode, inference and encode overlap; at most `depth` batches wait between
    two stages, and at most `max_in_flight` batches exist between the decoder and the consumer
    altogether, so memory reaches its ceiling within the first few batches (not after as many frames
    as the stages and queues can hold) and does not grow with video length. The first failure
    anywhere stops every thread and is re-raised once, in the iterating thread."""

    def __init__(self, source: Iterable[FrameBatch], stages: list, *, depth: int = 2, max_in_flight: int = 4,
                 context=None):
        self.source = source
        self.stages = stages
        self.depth = depth
        self.max_in_flight = max(1, int(max_in_flight))
        self.context = context  # a callable -> context manager every thread runs in (a device's: device.context)
        self._in_flight = 0
        self._room = threading.Condition()
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.seconds: dict[str, float] = {"decode": 0.0, **{s.name: 0.0 for s in stages}}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._raised = False  # the first failure is raised once, in the iterating thread

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None  # stopping

    def _count(self, delta: int) -> None:
        """Batches come into being at the decoder (+1) and leave at the consumer (-1); a stage that
        drops or merges batches gives their credit back, one that splits or flushes takes more."""
        with self._room:
            self._in_flight += delta
            self._room.notify_all()

    def _wait_for_room(self) -> bool:
        with self._room:
            while self._in_flight >= self.max_in_flight:
                if self.stop.is_set():
                    return False
                self._room.wait(timeout=0.1)
            self._in_flight += 1
            return not self.stop.is_set()

    def _in_context(self, target, *args) -> None:
        if self.context is None:
            target(*args)
            return
        try:
            with self.context():
                target(*args)
        except BaseException as exc:  # noqa: BLE001 - entering the context failed: the run fails
            self._fail(exc)

    def _run_source(self, out: queue.Queue) -> None:
        try:
            iterator = iter(self.source)
            while not self.stop.is_set():
                if not self._wait_for_room():
                    return
                started = time.perf_counter()
                batch = next(iterator, _END)
                self.seconds["decode"] += time.perf_counter() - started
                if batch is _END:
                    self._count(-1)
                if not self._put(out, batch) or batch is _END:
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the iterating thread
            self._fail(exc)

    def _run_stage(self, stage, inq: queue.Queue, out: queue.Queue) -> None:
        try:
            while True:
                item = self._get(inq)
                if item is None:
                    return
                started = time.perf_counter()
                results = list(stage.push(None if item is _END else item))
                self.seconds[stage.name] += time.perf_counter() - started
                self._count(len(results) - (0 if item is _END else 1))
                for result in results:
                    if not self._put(out, result):
                        return
                if item is _END:
                    self._put(out, _END)
                    return
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def __iter__(self) -> Iterator[FrameBatch]:
        queues = [queue.Queue(maxsize=self.depth) for _ in range(len(self.stages) + 1)]
        self._threads = [threading.Thread(target=self._in_context, args=(self._run_source, queues[0]),
                                          name="bgvid-decode", daemon=True)]
        for i, stage in enumerate(self.stages):
            self._threads.append(threading.Thread(
                target=self._in_context, args=(self._run_stage, stage, queues[i], queues[i + 1]),
                name=f"bgvid-{stage.name}", daemon=True))
        for thread in self._threads:
            thread.start()
        try:
            while True:
                item = self._get(queues[-1])
                if item is None or item is _END:  # stopped (by a failure, or by close()), or done
                    break
                self._count(-1)
                yield item
        finally:
            self.close()  # also when the consumer stops early (GeneratorExit): then nothing more is raised
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def close(self) -> None:
        """Stop every thread and close every stage: after the last batch, after a failure anywhere, and
        when the consumer stops early. Idempotent; never raises (a stage that fails to close is recorded as
        the run's failure if nothing failed before it, and iteration raises it)."""
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._closed:
            return
        self._closed = True
        for stage in self.stages:
            try:
                stage.close()
            except Exception as exc:  # noqa: BLE001 - the first failure wins
                self._fail(exc)
