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

from ._types import FrameBatch
from .kernels import DEFAULT_STRENGTH, SmoothState, composite, guided_upsample, resize_batch, smooth_mattes


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
        from .kernels import choke_feather

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

    def push(self, batch):
        if batch is None:
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
            from .kernels import decontaminate

            batch.rgb = decontaminate(batch.rgb, alpha)
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
    two stages, so memory does not grow with video length. The first failure anywhere stops every
    thread and is re-raised once, in the iterating thread."""

    def __init__(self, source: Iterable[FrameBatch], stages: list, *, depth: int = 2):
        self.source = source
        self.stages = stages
        self.depth = depth
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

    def _run_source(self, out: queue.Queue) -> None:
        try:
            iterator = iter(self.source)
            while not self.stop.is_set():
                started = time.perf_counter()
                batch = next(iterator, _END)
                self.seconds["decode"] += time.perf_counter() - started
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
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
