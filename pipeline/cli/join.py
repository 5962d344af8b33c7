"""`bgvid join`: concatenate render-farm parts without re-encoding."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Optional

import click

from .common import describe, exit_for, on_signal, say

JOIN_EPILOG = """\b
The render-farm pair (one command per frame range, on any node):
  bgvid run shot.mov --frames 0-99    -o parts/shot_0-99.mov
  bgvid run shot.mov --frames 100-199 -o parts/shot_100-199.mov
  ...
  bgvid join parts/shot_*.mov -o shot_alpha.mov --audio-from shot.mov

\b
Every .mov/.webm that `bgvid run` writes records its source (name, size,
fingerprint), its frame range and its options. join orders parts by that range
(shot_100-199 sorts after shot_1000-1099 by name: no matter), copies the packets
without re-encoding (ProRes is intra-frame; each VP9 part starts on a
keyframe), keeps the source's timestamps, and refuses a gap, an overlap, parts
of another source or parts rendered with other options, naming the files.
PNG sequences need no join: render every range into the same folder.
"""


@click.command("join", epilog=JOIN_EPILOG)
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The joined file: .mov for ProRes parts, .webm for VP9 parts.")
@click.option("--audio-from", type=click.Path(path_type=Path), metavar="SHOT",
              help="The source shot: its audio is laid back in exactly as a single `bgvid run` would "
                   "(checked to be the parts' source). Default: the parts' own audio, concatenated.")
@click.option("--no-audio", is_flag=True, help="No audio in the joined file.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--quiet", "-q", is_flag=True, help="No messages.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout at the end (also on failure, with \"error\").")
def join(parts, output: Path, audio_from: Optional[Path], no_audio: bool, force: bool, quiet: bool,
         as_json: bool) -> None:
    """Concatenate PARTS (segments from `bgvid run --frames`) into one file, without re-encoding.

    Exit status: 0 done, 2 parts that do not belong together or bad usage, 1 other failure.
    """
    from ..io.join import join_parts

    report = (lambda m: None) if quiet else say
    signal.signal(signal.SIGTERM, on_signal)
    result, error = None, None
    try:
        result = join_parts(parts, output, audio_from=audio_from, audio=not no_audio, overwrite=force, report=report)
    except BaseException as exc:  # noqa: BLE001 - mapped to an exit code below
        error = exc
    if as_json:
        payload = result.to_json() if result else {"output": str(output), "frames": 0}
        if error is not None:
            payload["error"] = describe(error)
        click.echo(json.dumps(payload))
    elif result and not quiet:
        say(f"Wrote {result.output} ({result.frames} frames {result.first}-{result.last} from "
             f"{len(result.parts)} part{'s' if len(result.parts) != 1 else ''}, audio: {result.audio})")
    if error is not None:
        exit_for(error, quiet=as_json)


