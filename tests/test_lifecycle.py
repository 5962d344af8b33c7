"""Stage lifecycle: the Pipeline closes every stage on success, on a failure anywhere and when its
consumer stops early; afterwards no bgvid thread is left and no temporary file lies beside the output."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import numpy as np
import pytest
from _clips import alpha_pattern, make_clip

from bgvid.frames import FrameBatch
from bgvid.stages.runner import Pipeline
from bgvid.stages.stages import DecontaminateStage, StageBase, TrimStage


def _bgvid_threads() -> list[str]:
    deadline = time.monotonic() + 5  # a pool thread may take a moment to leave after shutdown
    while True:
        names = [t.name for t in threading.enumerate() if t.name.startswith("bgvid") and t.is_alive()]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.02)


def _batches(count: int, size: int = 2, h: int = 8, w: int = 8):
    for b in range(count):
        idx = np.arange(b * size, (b + 1) * size, dtype=np.int64)
        yield FrameBatch(rgb=np.full((size, h, w, 3), b, np.uint8), frame_index=idx, pts=idx.copy(),
                         time_base=Fraction(1, 25), alpha=np.zeros((size, h, w), np.float32))


class Recording(StageBase):
    """Passes batches on; counts pushes, flushes and closes; raises on push number `fail_at`."""

    def __init__(self, name: str, fail_at: int | None = None):
        self.name = name
        self.fail_at = fail_at
        self.pushed = self.flushed = self.closed = 0

    def push(self, batch):
        if batch is None:
            self.flushed += 1
            return []
        self.pushed += 1
        if self.pushed == self.fail_at:
            raise RuntimeError(f"{self.name} failed on batch {self.pushed}")
        return [batch]

    def close(self) -> None:
        self.closed += 1


def test_every_stage_is_flushed_and_closed_once_after_a_full_run():
    stages = [Recording("a"), Recording("b")]
    pipeline = Pipeline(_batches(5), stages)
    got = [int(b.frame_index[0]) for b in pipeline]
    assert got == [0, 2, 4, 6, 8]
    pipeline.close()  # a second close is harmless
    assert [(s.pushed, s.flushed, s.closed) for s in stages] == [(5, 1, 1), (5, 1, 1)]
    assert _bgvid_threads() == []


def test_a_stage_that_raises_mid_run_stops_everything_reports_once_and_closes_every_stage():
    stages = [Recording("first"), Recording("boom", fail_at=3), Recording("last")]
    pipeline = Pipeline(_batches(50), stages)
    seen = 0
    with pytest.raises(RuntimeError, match="boom failed on batch 3"):
        for _ in pipeline:
            seen += 1
    assert seen <= 2  # nothing after the failing batch reached the consumer
    assert stages[1].pushed == 3 and stages[0].pushed < 50  # the source stopped early
    assert [s.closed for s in stages] == [1, 1, 1]
    assert _bgvid_threads() == []


def test_a_consumer_that_stops_after_two_batches_closes_every_stage():
    stages = [Recording("a"), Recording("b")]
    pipeline = Pipeline(_batches(100), stages)
    for n, _ in enumerate(pipeline, start=1):
        if n == 2:
            break
    pipeline.close()  # what callers do in their finally (iteration's own finally ran on break, too)
    assert [s.closed for s in stages] == [1, 1]
    assert stages[0].pushed < 100 and stages[0].flushed == 0
    assert _bgvid_threads() == []


def test_a_trim_stage_that_drops_whole_batches_gives_their_credit_back():
    # 10 batches of 2 frames; frames 0-13 are warm-up: the first 7 batches vanish whole. With room for
    # only 2 batches in flight, a dropped batch that kept its credit would stall the source for ever.
    trim = TrimStage(14)
    pipeline = Pipeline(_batches(10), [trim, Recording("after")], max_in_flight=2)
    done = threading.Event()
    result = []

    def consume():
        result.extend(int(i) for b in pipeline for i in b.frame_index)
        done.set()

    worker = threading.Thread(target=consume, name="test-consumer", daemon=True)
    worker.start()
    assert done.wait(20), "the pipeline stalled: dropped batches kept their in-flight credit"
    assert result == list(range(14, 20))
    assert _bgvid_threads() == []


class FakeSegment(StageBase):
    """Stands in for the model: a soft, moving matte, so decontamination has edges to solve."""

    name = "segment"

    def push(self, batch):
        if batch is None:
            return []
        h, w = batch.rgb.shape[1:3]
        batch.alpha = np.stack([alpha_pattern(int(i), w, h) for i in batch.frame_index])
        return [batch]


def test_a_real_run_that_fails_mid_way_leaves_no_thread_and_no_file(tmp_path):
    from bgvid.io.reader import VideoReader, probe
    from bgvid.io.writer import VideoWriter

    clip = make_clip(tmp_path / "clip.mp4", width=96, height=64, frames=24)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "result.mov"
    info = probe(clip)
    reader = VideoReader(clip, batch_size=2)
    decontaminate = DecontaminateStage(workers=2)
    stages = [FakeSegment(), decontaminate, Recording("boom", fail_at=4)]
    writer = VideoWriter(dst, info=info, kind="prores")
    pipeline = Pipeline(reader, stages)
    written = 0
    with pytest.raises(RuntimeError, match="boom failed on batch 4"):
        try:
            for batch in pipeline:
                writer.push(batch)
                written += len(batch)
            writer.push(None)
        except BaseException:
            writer.abort()
            raise
        finally:
            pipeline.close()
            reader.close()
    assert written >= 2  # the writer had started: there was a partial file to remove
    assert decontaminate._pool is None  # the stage's thread pool was shut down by close()
    assert _bgvid_threads() == []
    assert list(out_dir.iterdir()) == []  # neither the output nor its temporary name


def test_decontaminate_stage_close_without_a_flush_stops_its_pool():
    stage = DecontaminateStage(workers=2)
    (batch,) = _batches(1, size=2, h=48, w=64)
    batch.alpha = np.stack([alpha_pattern(i, 64, 48) for i in range(2)])
    (out,) = stage.push(batch)
    assert stage._pool is not None
    assert any(name.startswith("bgvid-decontaminate") for name in _bgvid_threads_now())
    stage.close()
    stage.close()
    assert stage._pool is None
    assert _bgvid_threads() == []
    assert out.rgb.shape == (2, 48, 64, 3)


def _bgvid_threads_now() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("bgvid")]
