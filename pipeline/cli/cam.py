"""`bgvid cam`: live background removal into a virtual camera or a network stream."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Optional

import click

CAM_EPILOG = """\b
Examples:
  bgvid cam                                      /dev/video0 -> virtual camera, room blurred
  bgvid cam --background "#00ff00" --stats       green screen, live fps/latency on stderr
  bgvid cam --source talk.mp4 --loop --sink udp://127.0.0.1:5000
        a file played as a camera, streamed as MPEG-TS; watch with
        ffplay -fflags nobuffer -flags low_delay udp://127.0.0.1:5000
  bgvid cam --source 1 --size 1280x720 --fps 30 --background beach.jpg

\b
Real time: a capture thread keeps only the newest frame; the loop always
works on it and counts the frames it never saw as dropped, so it can fall
behind by at most one frame. Latency = from reading a frame to handing its
result to the sink. --stats prints fps, latency p50/p99 and drops once a
second; a summary is printed at exit (also on Ctrl-C).

\b
Virtual camera: pip install 'bgvid[cam]' (pyvirtualcam); on Linux load
v4l2loopback first: sudo modprobe v4l2loopback exclusive_caps=1
card_label=bgvid. On Windows/macOS it uses OBS's virtual camera.

Exit status: 0 done, 2 bad usage or input, 1 other failure, 130 Ctrl-C,
143 SIGTERM.
"""


class _LiveLine:
    """--stats: one line per second on stderr, over the last second's frames."""

    def __init__(self, every_s: float = 1.0):
        self.every_s = every_s
        self.last_t = time.perf_counter()
        self.last_frames = 0
        self.last_handed = 0
        self.last_dropped = 0

    def __call__(self, stats) -> None:
        import numpy as np

        now = time.perf_counter()
        if now - self.last_t < self.every_s:
            return
        n = stats.handed - self.last_handed
        window = np.asarray(stats.latency[-n:]) * 1000 if n else np.zeros(1)
        click.echo(f"{(stats.frames - self.last_frames) / (now - self.last_t):5.1f} fps  "
                   f"latency p50 {np.percentile(window, 50):5.1f} ms  "
                   f"p99 {np.percentile(window, 99):5.1f} ms  dropped {stats.dropped - self.last_dropped} "
                   f"(total {stats.dropped})", err=True)
        self.last_t, self.last_frames, self.last_dropped = now, stats.frames, stats.dropped
        self.last_handed = stats.handed


@click.command("cam", epilog=CAM_EPILOG)
@click.option("--source", default="/dev/video0", show_default=True, metavar="DEVICE|FILE|URL",
              help="A V4L2 camera (/dev/videoN, or just N), or a video file / URL played at its own frame "
                   "rate as if it were a camera.")
@click.option("--sink", default="virtual", show_default=True, metavar="virtual|URL|FILE|null",
              help="'virtual': a virtual camera (pyvirtualcam); a URL such as udp://127.0.0.1:5000 "
                   "(MPEG-TS), srt://, tcp://, rtmp:// (FLV); a file (.ts, .mkv); or 'null' to measure.")
@click.option("--background", default="blur", show_default=True, metavar="blur|COLOR|IMAGE|VIDEO",
              help="What replaces the room: the blurred room, #rrggbb or a CSS colour name, an image "
                   "(scaled to cover), or a video (loops).")
@click.option("--model", default="selfie-landscape", show_default=True, metavar="NAME|FILE.onnx",
              help="Segmentation model. selfie-landscape (256x144) is made for this; selfie (256x256) is "
                   "a little finer and slower; rvm and isnet are too slow for live use on a CPU.")
@click.option("--size", metavar="WxH", help="Frame size: asked of the camera, or the file is scaled to it. "
                                             "Default: the source's own.")
@click.option("--fps", metavar="N", help="Frame rate: asked of the camera; a file plays at N frames per second "
                                          "instead of its own rate. Also the sink's rate.")
@click.option("--loop", is_flag=True, help="Play a file source again from the start when it ends.")
@click.option("--every", type=int, default=1, show_default=True, metavar="N",
              help="Run the model on every Nth frame only and carry its matte forward in between (the "
                   "smoother still runs every frame). Saves CPU; edges lag a little on fast motion.")
@click.option("--smooth", type=float, default=0.5, show_default=True, metavar="STRENGTH",
              help="Temporal smoothing in [0, 1): steadier edges where nothing moves, no lag where "
                   "something does; 0 turns it off.")
@click.option("--codec", type=click.Choice(["libx264", "mpeg2video"]), default="libx264", show_default=True,
              help="Stream sink encoder: H.264 (ultrafast, zerolatency) or MPEG-2 (cheaper, bigger).")
@click.option("--frames", type=int, metavar="N", help="Stop after N frames sent.")
@click.option("--duration", type=float, metavar="S", help="Stop after S seconds.")
@click.option("--stats", "show_stats", is_flag=True,
              help="Print fps, latency p50/p99 and dropped frames once a second on stderr.")
@click.option("--threads", type=int, default=1, show_default=True, metavar="N",
              help="ONNX Runtime threads for the model; 0 = all cores. One is enough for selfie-landscape and "
                   "leaves the other cores to decoding and encoding.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout at exit.")
@click.option("--quiet", "-q", is_flag=True, help="No messages (the --stats lines still print).")
def cam(source, sink, background, model, size, fps, loop, every, smooth, codec, frames, duration, show_stats,
        threads, as_json, quiet) -> None:
    """Live background removal: a webcam (or a file played as one) into a virtual camera or a
    network stream, in real time on a CPU. Runs until Ctrl-C, --frames, --duration, or the end of a
    file source (without --loop)."""
    from ..apps.cam import open_live
    from .common import exit_for, on_signal, say

    report = (lambda m: None) if quiet else say
    signal.signal(signal.SIGTERM, on_signal)
    session = None
    error: Optional[BaseException] = None
    try:
        session = open_live(source, sink, background=background, model=model, size=size, fps=fps, loop=loop,
                            every=every, smooth=smooth or None, codec=codec, threads=threads, report=report)
        if not quiet:
            say("Running: Ctrl-C to stop" if frames is None and duration is None else "Running")
        session.run(frames=frames, duration=duration, on_frame=_LiveLine() if show_stats else None)
    except BaseException as exc:  # noqa: BLE001 - mapped to an exit code below
        error = exc
    finally:
        if session is not None:
            try:
                session.close()
            except BaseException as exc:  # noqa: BLE001
                error = error or exc
    stats = session.stats if session is not None else None
    if stats is None and as_json and error is not None:
        click.echo(json.dumps({"frames": 0,
                               "error": "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)}))
    if stats is not None:
        if as_json:
            payload = stats.to_json()
            if error is not None:
                payload["error"] = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
            click.echo(json.dumps(payload))
        if not quiet or show_stats:
            say(f"bgvid cam: {stats.summary()}")
            if stats.frames:
                stages = ", ".join(f"{k} {v:.1f}" for k, v in stats.stage_ms().items())
                say(f"bgvid cam: ms per frame: {stages}")
    if error is not None:
        if isinstance(error, KeyboardInterrupt) and stats is not None:
            sys.exit(128 + getattr(error, "signum", 2))
        exit_for(error, quiet=as_json)
