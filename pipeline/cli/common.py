"""What every command shares: messages on stderr, progress, signals, and the mapping from exceptions
to exit codes (the library raises; only the command line exits)."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Optional

import click

from ..errors import BgvidError


def say(message: str) -> None:
    click.echo(message, err=True)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_signal(signum, frame):  # SIGTERM behaves like Ctrl-C: stop, clean up, exit 128+N
    raise Interrupted(signum)


class Progress:
    """Progress on stderr: a bar on a terminal, JSON lines (one per second) for farm managers."""

    def __init__(self, mode: str):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "none"
        self.mode = mode
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = -1  # frames at the last line printed

    def __call__(self, done: int, total: Optional[int], final: bool = False) -> None:
        now = time.monotonic()
        if self.mode == "none" or (not final and now - self.last < (1.0 if self.mode == "json" else 0.2)):
            return
        if final and done == self.shown:
            if self.mode == "bar":
                click.echo("", err=True)
            return
        self.last, self.shown = now, done
        elapsed = max(now - self.started, 1e-9)
        fps = done / elapsed
        if self.mode == "json":
            click.echo(json.dumps({"frame": done, "total": total, "fps": round(fps, 2),
                                   "elapsed": round(elapsed, 1)}), err=True)
            return
        if total:
            width = 30
            filled = int(width * min(done, total) / total)
            eta = (total - done) / fps if fps > 0 else 0
            line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} frames  {fps:5.1f} fps  "
                    f"ETA {int(eta // 60)}:{int(eta % 60):02d} ")
        else:
            line = f"\r{done} frames  {fps:5.1f} fps "
        click.echo(line + ("\n" if final else ""), err=True, nl=False)



def describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, BgvidError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def exit_for(exc: BaseException, *, quiet: bool = False) -> None:
    if isinstance(exc, Interrupted):
        say("bgvid: interrupted; no output written")
        sys.exit(128 + exc.signum)
    if isinstance(exc, KeyboardInterrupt):
        say("bgvid: interrupted; no output written")
        sys.exit(130)
    if isinstance(exc, BgvidError):
        say(f"bgvid: error: {exc}")
        sys.exit(exc.exit_code)
    raise exc  # a bug: keep the traceback for the report
