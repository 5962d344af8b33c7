"""`bgvid cam`: live background removal. Real clips, real codecs, a real UDP stream on loopback;
the virtual camera is a fake device object injected through the library API (v4l2loopback is a
kernel module). No test asserts a wall-clock time."""

from __future__ import annotations

import errno
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from bgvid import InputError
from bgvid.apps.cam import Captured, LiveStats, _Newest, open_live, open_source, run_live

FPS = 24
CLIP_FRAMES = 30
W, H = 256, 144
GREEN = (0, 255, 0)


def bgvid_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bgvid", "cam", *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.fixture(scope="module")
def juggle(tmp_path_factory):
    """The first 30 frames of ../shared/media/clips/juggle.mp4 (a person juggling in a park),
    at 256x144, 24 fps, near-lossless H.264."""
    from conftest import SHARED_MEDIA

    src = SHARED_MEDIA / "clips" / "juggle.mp4"
    if not src.is_file():
        pytest.skip(f"real footage not found at {src}")
    path = tmp_path_factory.mktemp("cam") / "juggle30.mp4"
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "10", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == CLIP_FRAMES:
                break
            small = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24", width=W, height=H), format="rgb24")
            small.pts = i
            small.time_base = Fraction(1, FPS)
            for packet in stream.encode(small.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture
def selfie_landscape(model_path):
    return model_path("selfie-landscape")


def _far_from_person(rgb: np.ndarray) -> np.ndarray:
    """Pixels far from the juggler (who stays within x 118..169 of 256 in these frames): the left
    and right quarters of the picture, below the top rows."""
    w = rgb.shape[1]
    return np.concatenate([rgb[10:, : w // 4].reshape(-1, 3), rgb[10:, 3 * w // 4:].reshape(-1, 3)])


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_bound(port: int, receiver, seconds: float = 60.0) -> None:
    """FFmpeg binds its UDP socket without SO_REUSEADDR: once ours fails with EADDRINUSE, the
    receiver is listening and no packet of the stream can be lost to a race."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert receiver.error is None, receiver.error
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return
                raise
        time.sleep(0.02)
    raise AssertionError("the UDP receiver did not start")


class _Receiver(threading.Thread):
    """Reads an MPEG-TS stream from udp://127.0.0.1:PORT with PyAV: waits up to 60 s for the first
    packet, then reads until 3 s without data."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.url = f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1&buffer_size=4194304"
        self.frames: list[tuple[int, Fraction, np.ndarray]] = []
        self.codec = None
        self.error = None

    def _keep(self, frames) -> None:
        for frame in frames:
            self.frames.append((frame.pts, frame.time_base, frame.to_ndarray(format="rgb24")))

    def _open(self):
        """The test's own probe (_wait_until_bound) may hold the port for an instant just as FFmpeg binds
        it: try again then, instead of failing the test on that race."""
        for _ in range(100):
            try:
                return av.open(self.url, format="mpegts", timeout=(60.0, 3.0))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                time.sleep(0.01)
        return av.open(self.url, format="mpegts", timeout=(60.0, 3.0))

    def run(self):
        try:
            with self._open() as container:
                stream = container.streams.video[0]
                self.codec = stream.codec_context.name
                decoder = stream.codec_context
                try:
                    for packet in container.demux(stream):
                        self._keep(decoder.decode(packet))
                except (av.error.ExitError, av.error.EOFError, OSError):
                    pass  # the stream went quiet: the sender is done
                self._keep(decoder.decode(None))  # MPEG-2 holds its last picture until flushed
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _check_spacing(frames, stats: LiveStats, fps: int) -> None:
    pts = np.array([p for p, _, _ in frames], dtype=np.int64)
    tb = frames[0][1]
    tick = Fraction(1, fps) / tb  # one frame period in the receiver's time base (90 kHz: 3750 at 24 fps)
    assert tick.denominator == 1
    steps = np.diff(pts)
    assert (steps > 0).all() and (steps % int(tick) == 0).all(), steps
    gaps = int((steps // int(tick) - 1).sum())  # frame periods left empty by dropped frames
    assert gaps <= stats.dropped
    if stats.dropped == 0:
        assert (steps == int(tick)).all()


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_udp_stream_on_loopback_replaces_the_background(juggle, selfie_landscape, codec):
    port = _free_udp_port()
    session = open_live(str(juggle), f"udp://127.0.0.1:{port}", background="#00ff00", codec=codec)
    try:
        receiver = _Receiver(port)
        receiver.start()
        _wait_until_bound(port, receiver)
        stats = session.run()
    finally:
        session.close()
    receiver.join(timeout=60)
    assert receiver.error is None, receiver.error
    assert receiver.codec == ("h264" if codec == "libx264" else "mpeg2video")

    # Every frame of the clip was either sent or counted as dropped; every frame sent arrived.
    assert stats.frames + stats.dropped == CLIP_FRAMES == stats.captured
    assert stats.frames >= 1 and len(stats.latency) == stats.handed == stats.frames + stats.dropped_at_sink
    assert len(receiver.frames) == stats.frames
    # Timestamps step by exactly 1/fps (a dropped frame leaves a gap of whole frame periods).
    _check_spacing(receiver.frames, stats, FPS)
    # The park is gone: far from the person the picture is the colour (H.264/MPEG-2 coding error aside).
    for _, _, rgb in receiver.frames:
        assert rgb.shape == (H, W, 3)
        far = _far_from_person(rgb).astype(np.int16)
        assert np.abs(np.median(far, axis=0) - GREEN).max() <= 4
        assert (np.abs(far - GREEN).max(axis=1) <= 24).mean() > 0.97
    # ...and the person is still there: the middle is not the colour.
    middle = receiver.frames[-1][2][40:130, 125:160].astype(np.int16)
    assert (np.abs(middle - GREEN).max(axis=-1) > 60).mean() > 0.5


class FakeCamera:
    """Stands in for pyvirtualcam.Camera: records what it is sent."""

    def __init__(self, delay: float = 0.0):
        self.frames: list[np.ndarray] = []
        self.closed = False
        self.delay = delay
        self.device = "/dev/video-fake"

    def send(self, frame):
        assert not self.closed
        self.frames.append(frame.copy())
        if self.delay:
            time.sleep(self.delay)  # a sink slower than the camera

    def close(self):
        self.closed = True


def test_virtual_camera_gets_composited_frames(juggle, selfie_landscape):
    camera = FakeCamera()
    stats = run_live(str(juggle), "virtual", camera=camera, background="#00ff00", frames=12)
    assert camera.closed
    assert stats.handed == 12 and stats.frames == len(camera.frames) == 12 - stats.dropped_at_sink
    assert stats.captured >= stats.frames + stats.dropped
    for frame in camera.frames:
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
        assert np.abs(np.median(_far_from_person(frame), axis=0) - GREEN).max() <= 1
    assert stats.latency_ms(50) > 0 and stats.latency_ms(99) >= stats.latency_ms(50)
    assert set(stats.stage_ms()) == {"convert", "segment", "smooth", "upsample", "composite", "sink"}


def test_blur_background_is_the_blurred_room(juggle, selfie_landscape):
    """--background blur: far from the person the output is the blurred original."""
    from bgvid.kernels import blur_frames

    camera = FakeCamera()
    run_live(str(juggle), "virtual", camera=camera, background="blur", frames=4, size="256x144")
    with av.open(str(juggle)) as c:
        originals = [f.to_ndarray(format="rgb24") for _, f in zip(range(CLIP_FRAMES), c.decode(video=0), strict=False)]
    frame = camera.frames[-1]
    candidates = [blur_frames(o[None])[0] for o in originals]
    # The frame shown is one of the clip's (the newest at the time): it matches one blurred original.
    errors = [np.abs(_far_from_person(frame).astype(np.int16) - _far_from_person(c)).mean() for c in candidates]
    assert min(errors) < 2.0
    assert np.abs(_far_from_person(frame).astype(np.int16)
                  - _far_from_person(originals[int(np.argmin(errors))])).mean() > 4


def test_size_scales_the_source(juggle, selfie_landscape):
    camera = FakeCamera()
    stats = run_live(str(juggle), "virtual", camera=camera, background="navy", frames=3, size="160x90")
    assert stats.handed == 3
    assert {f.shape for f in camera.frames} == {(90, 160, 3)}


def test_every_n_runs_the_model_on_every_nth_frame(juggle, selfie_landscape):
    camera = FakeCamera()
    stats = run_live(str(juggle), "virtual", camera=camera, background="#00ff00", frames=10, every=3)
    assert stats.handed == 10
    assert stats.model_runs == 4  # frames 0, 3, 6, 9 of those sent
    for frame in camera.frames:  # the carried matte still replaces the background
        assert np.abs(np.median(_far_from_person(frame), axis=0) - GREEN).max() <= 1


def test_smoothing_state_is_explicit(juggle, selfie_landscape):
    from bgvid.kernels import SmoothState

    session = open_live(str(juggle), "null", background="red")
    try:
        assert session.smooth_state is None
        session.run(frames=3)
        assert isinstance(session.smooth_state, SmoothState)
        assert session.smooth_state.alpha.shape == (144, 256)  # the model's resolution
    finally:
        session.close()
    session = open_live(str(juggle), "null", background="red", smooth=None)
    try:
        session.run(frames=2)
        assert session.smooth_state is None and [s.name for s in session.stages] == ["upsample", "composite"]
    finally:
        session.close()


def test_newest_frame_wins_and_the_rest_count_as_dropped():
    slot = _Newest()
    for seq in range(3):
        slot.put(Captured(frame=None, seq=seq, t_read=0.0, media_time=seq / 24))
    assert slot.take(timeout=0).seq == 2
    assert slot.take(timeout=0) is None  # nothing new: no frame is handed out twice
    slot.put(Captured(frame=None, seq=3, t_read=0.0, media_time=3 / 24))
    slot.close()
    assert slot.take(timeout=0).seq == 3 and slot.ended
    failing = _Newest()
    failing.close(InputError("x.mp4: broken"))
    with pytest.raises(InputError, match="broken"):
        failing.take(timeout=0)


@pytest.mark.parametrize("threaded_sink", [True, False])
def test_a_slow_sink_drops_frames_instead_of_queueing(juggle, selfie_landscape, threaded_sink):
    """The sink takes 4 frame periods per frame: the loop (or the sink thread) skips to the newest
    frame each time rather than working through a backlog, so frames are dropped and none waits in
    a queue."""
    camera = FakeCamera(delay=4 / FPS)
    stats = run_live(str(juggle), "virtual", camera=camera, background="red", threaded_sink=threaded_sink)
    assert stats.frames + stats.dropped == CLIP_FRAMES
    assert (stats.dropped_at_sink > 0) == threaded_sink
    assert stats.dropped >= CLIP_FRAMES // 2
    assert stats.frames == len(camera.frames) >= 2


def test_loop_plays_a_file_again(juggle, selfie_landscape, tmp_path):
    out = tmp_path / "out.ts"
    stats = run_live(str(juggle), str(out), background="red", loop=True, frames=CLIP_FRAMES + 10, fps=60)
    assert stats.handed == CLIP_FRAMES + 10 and stats.captured > CLIP_FRAMES
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        pts = [f.pts for f in c.decode(stream)]
    assert len(pts) == stats.frames
    steps = np.diff(pts)
    tick = int(Fraction(1, 60) / stream.time_base)
    assert (steps > 0).all() and (steps % tick == 0).all()  # the clock runs on across the loop


def test_cli_file_sink_with_stats_and_json(juggle, selfie_landscape, tmp_path):
    out = tmp_path / "live.mkv"
    proc = bgvid_cli("--source", juggle, "--sink", out, "--background", "#00ff00", "--stats", "--json",
                     "--frames", 20, "--codec", "mpeg2video")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["handed"] == 20 and summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"] > 0
    assert set(summary["stage_ms"]) >= {"segment", "composite", "sink"}
    assert f"bgvid cam: {summary['frames']} frames" in proc.stderr and "latency p50" in proc.stderr
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == summary["frames"] == 20 - summary["dropped_at_sink"]


def test_cli_ctrl_c_prints_the_summary(juggle, selfie_landscape):
    proc = subprocess.Popen([sys.executable, "-m", "bgvid", "cam", "--source", str(juggle), "--sink", "null",
                             "--loop", "--background", "red", "--stats"], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "latency p50" in line:  # the first --stats line: frames are flowing
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "bgvid cam:" in rest and "frames in" in rest and "latency p50" in rest and "Traceback" not in rest


def test_cli_missing_pyvirtualcam_is_a_clear_error(juggle, selfie_landscape):
    try:
        import pyvirtualcam  # noqa: F401
        pytest.skip("pyvirtualcam is installed here")
    except ImportError:
        pass
    proc = bgvid_cli("--source", juggle, "--sink", "virtual", "--frames", 1)
    assert proc.returncode == 1
    assert "pip install 'bgvid[cam]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--source", "/no/such/clip.mp4", "--sink", "null"], "/no/such/clip.mp4: no such file"),
    (["--source", "/dev/video99", "--sink", "null"], "/dev/video99: no such camera device"),
    (["--sink", "null", "--size", "big"], "--size 'big'"),
    (["--sink", "null", "--fps", "0"], "--fps 0"),
    (["--sink", "null", "--every", "0"], "--every must be at least 1"),
    (["--sink", "null", "--background", "no-such-thing"], "--background 'no-such-thing'"),
    (["--sink", "nowhere", "--background", "red"], "--sink 'nowhere'"),
    (["--sink", "udp://127.0.0.1:9", "--size", "255x144"], "255x144 is odd"),
])
def test_cli_bad_input_exits_2_naming_it(juggle, selfie_landscape, args, needle):
    args = [a if a != "JUGGLE" else juggle for a in args]
    if "--source" not in args:
        args = ["--source", juggle, *args]
    proc = bgvid_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_not_a_video_is_an_input_error(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(InputError, match="notes.mp4: cannot open as video"):
        open_source(str(bad))


def test_help_teaches():
    proc = bgvid_cli("--help")
    assert proc.returncode == 0
    for word in ("--source", "--sink", "udp://127.0.0.1:5000", "--background", "--every", "--stats", "dropped",
                 "v4l2loopback", "bgvid[cam]"):
        assert word in proc.stdout, word
