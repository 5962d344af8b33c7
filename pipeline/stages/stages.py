"""Stages and the threaded runner that joins them.

A stage follows PyAV's encoder protocol: `push(batch)` returns the batches it can emit now,
`push(None)` flushes what it holds. State that must travel between frames (recurrent models,
temporal smoothing) lives in explicit objects owned by the stage, never in globals.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterable, Iterator, Optional, Protocol

import numpy as np

from ..frames import FrameBatch
from ..kernels import DEFAULT_STRENGTH, SmoothState, composite, guided_upsample, resize_batch, smooth_mattes


class Stage(Protocol):
    name: str

    def push(self, batch: Optional[FrameBatch]) -> Iterable[FrameBatch]: ...


class SegmentStage:
    """Runs the model; sets batch.alpha at the model's resolution."""

    name = "segment"

    def __init__(self, segmenter, state=None):
        self.segmenter = segmenter
        self.state = state  # recurrent state (None for per-frame models), carried batch to batch

    def push(self, batch):
        if batch is None:
            return []
        batch.alpha, batch.foreground, self.state = self.segmenter.segment(
            batch.rgb, self.state, size="model", with_foreground=True)
        return [batch]


class SmoothStage:
    """Temporal smoothing at the matte's resolution (see kernels/_smooth.py). Its state is explicit:
    pass `state` to continue from another run; frames must arrive in order."""

    name = "smooth"

    def __init__(self, strength: float = DEFAULT_STRENGTH, state: Optional[SmoothState] = None):
        self.strength = strength
        self.state = state

    def push(self, batch):
        if batch is None:
            return []
        batch.alpha, self.state = smooth_mattes(batch.alpha, batch.rgb, self.state, strength=self.strength)
        return [batch]


class UpsampleStage:
    """Brings the matte to frame resolution: "none" = bilinear, "guided" = fast guided filter."""

    name = "upsample"

    def __init__(self, refine: str = "none"):
        self.refine = refine

    def push(self, batch):
        if batch is None:
            return []
        if self.refine == "guided":
            batch.alpha = guided_upsample(batch.alpha, batch.rgb)
        else:
            batch.alpha = resize_batch(batch.alpha, batch.rgb.shape[1:3], interpolation="bilinear")
        return [batch]


class FinishStage:
    """Matte finishing a compositor expects: choke (shrink/grow) and feather, in pixels."""

    name = "finish"

    def __init__(self, choke: float = 0.0, feather: float = 0.0):
        self.choke, self.feather = choke, feather

    def push(self, batch):
        if batch is None:
            return []
        from ..kernels import choke_feather

        batch.alpha = choke_feather(batch.alpha, choke=self.choke, feather=self.feather)
        return [batch]


class TrimStage:
    """Drops warm-up frames (index < first) once they have primed the temporal state."""

    name = "trim"

    def __init__(self, first: int):
        self.first = first

    def push(self, batch):
        if batch is None:
            return []
        keep = batch.frame_index >= self.first
        if keep.all():
            return [batch]
        if not keep.any():
            return []
        batch.rgb, batch.alpha = batch.rgb[keep], batch.alpha[keep]
        batch.frame_index, batch.pts = batch.frame_index[keep], None if batch.pts is None else batch.pts[keep]
        if batch.foreground is not None:
            batch.foreground = batch.foreground[keep]
        return [batch]


class DecontaminateStage:
    """Straight-alpha colour in half-transparent pixels must be the foreground's own colour, not the
    foreground mixed with the old background (the halo every tool's users complain about). Uses the
    model's predicted foreground (rvm's fgr, written into half-transparent pixels) where there is
    one, else a multi-level foreground estimate from the frame and the matte (kernels/_foreground:
    it also fills fully transparent pixels, so 4:2:0 chroma and resizes downstream do not pull the
    old background back into the edge). Opaque pixels keep their colour exactly."""

    name = "decontaminate"

    def __init__(self, workers: int = 0):
        # The estimate is the costliest per-pixel step: the frames of a batch are solved on `workers`
        # threads (0 = one per core), so this stage alone is not the pipeline's bottleneck.
        import os

        if not workers:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = int(workers)
        self._pool = None

    def push(self, batch):
        if batch is None:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            return []
        alpha = batch.alpha
        soft = (alpha > 0.0) & (alpha < 1.0)
        if not soft.any():
            return [batch]
        if batch.foreground is not None:
            top = 65535.0 if batch.rgb.dtype == np.uint16 else 255.0
            estimate = np.rint(batch.foreground * top).astype(batch.rgb.dtype)
            batch.rgb = np.where(soft[..., None], estimate, batch.rgb)
        else:
            from ..kernels import decontaminate

            if self._pool is None and self.workers > 1 and len(batch) > 1:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bgvid-decontaminate")
            batch.rgb = decontaminate(batch.rgb, alpha, executor=self._pool)
        return [batch]


class CompositeStage:
    """Replaces the background: colour, image, looping video or the blurred original.
    The result is opaque (alpha 1)."""

    name = "composite"

    def __init__(self, background):
        self.background = background  # a _background.Background

    def push(self, batch):
        if batch is None:
            return []
        plate = self.background.plates(batch)
        batch.rgb = composite(batch.rgb, batch.alpha, plate)
        batch.alpha = np.ones_like(batch.alpha)
        return [batch]


_END = object()


class Pipeline:
    """Runs a frame source and stages in threads joined by bounded queues; iterate it for the
    finished batches. Decode, inference and encode overlap; at most `depth` batches wait between
    two stages, and at most `max_in_flight` batches exist between the decoder and the consumer
    altogether, so memory reaches its ceiling within the first few batches (not after as many frames
    as the stages and queues can hold) and does not grow with video length. The first failure
    anywhere stops every thread and is re-raised once, in the iterating thread."""

    def __init__(self, source: Iterable[FrameBatch], stages: list, *, depth: int = 2, max_in_flight: int = 4):
        self.source = source
        self.stages = stages
        self.depth = depth
        self.max_in_flight = max(1, int(max_in_flight))
        self._in_flight = 0
        self._room = threading.Condition()
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.seconds: dict[str, float] = {"decode": 0.0, **{s.name: 0.0 for s in stages}}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

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
        self._threads = [threading.Thread(target=self._run_source, args=(queues[0],), name="bgvid-decode", daemon=True)]
        for i, stage in enumerate(self.stages):
            self._threads.append(threading.Thread(
                target=self._run_stage, args=(stage, queues[i], queues[i + 1]), name=f"bgvid-{stage.name}", daemon=True))
        for thread in self._threads:
            thread.start()
        try:
            while True:
                item = self._get(queues[-1])
                if item is None:  # stopped: by a failure, or by close()
                    if self.error is not None:
                        raise self.error
                    return
                if item is _END:
                    return
                self._count(-1)
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
