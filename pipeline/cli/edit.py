"""`bgvid edit`: the correction brush in the browser (see bgvid.apps.edit)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import click

EDIT_EPILOG = """\b
In the page:
  paint            drag on the frame (mouse, pen or one finger)
  brush            Remove (black) / Restore (white), size in video pixels,
                   softness 0..1 (the outer part of the radius that fades)
  frames           this frame, this frame and the next N, or from A to B
                   (I / O mark the current frame as from / to)
  scrub            timeline, arrow keys (Shift: 10 frames), Home / End
  view             V: overlay, cut-out on a checkerboard, matte, frame
  zoom / pan       Ctrl+wheel or pinch / wheel, Space+drag or two fingers
  undo / redo      Ctrl+Z / Ctrl+Shift+Z (the last 50 strokes)
  save             Ctrl+S or the Save button; also when the tab closes
\b
Then render: bgvid run INPUT --overrides PATH --model NAME
"""


@click.command("edit", epilog=EDIT_EPILOG)
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--overrides", type=click.Path(path_type=Path), metavar="PATH",
              help="Where the strokes are kept: a .json file (created on the first save; painting "
                   "continues from it when it exists) or an override folder (its overrides.json; its PNGs "
                   "show under the strokes). Default: INPUT_overrides.json beside the input.")
@click.option("--model", "model", metavar="NAME|FILE.onnx",
              help="The model whose matte you correct (default: rvm, bgvid run's person path; the object "
                   "path of --subject any is not previewed). Give this and the "
                   "options below as you will give them to bgvid run: the preview is then exactly what "
                   "it renders. selfie is fastest to scrub.")
@click.option("--refine", type=click.Choice(["none", "guided"]), default=None,
              help="Upsampling, as bgvid run --refine (default as there).")
@click.option("--smooth", type=float, default=None, metavar="STRENGTH",
              help="Temporal smoothing, as bgvid run --smooth (default as there).")
@click.option("--no-smooth", is_flag=True, help="As bgvid run --no-smooth.")
@click.option("--choke", type=float, default=0.0, metavar="PX", help="As bgvid run --choke.")
@click.option("--feather", type=float, default=0.0, metavar="PX", help="As bgvid run --feather.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="Where the model runs, as bgvid run --device.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
def edit(input: Path, overrides: Optional[Path], model, refine, smooth, no_smooth, choke, feather, device, port,
         no_browser) -> None:
    """Correct the matte of INPUT in your browser: paint restore / remove strokes over ranges
    of frames, preview exactly what `bgvid run --overrides` will render, save them as
    overrides.json.

    The page is served on 127.0.0.1 only, under a URL with a random access token (printed on
    stdout); requests without it are refused, and nothing but INPUT is read and nothing but the
    overrides file is written (atomically). Stop with Ctrl-C: a save in progress completes or
    leaves the previous file; exit status 0. Bad input or options: exit 2 with one line naming
    the file.
    """
    from ..apps.edit import EditorServer
    from ..errors import BgvidError
    from .common import exit_for, say

    smooth_value = None if no_smooth or smooth == 0 else ("auto" if smooth is None else smooth)
    try:
        editor = EditorServer(input, overrides=overrides, model=model, device=device, refine=refine,
                              smooth=smooth_value, choke=choke, feather=feather, port=port, report=say)
    except BgvidError as exc:
        exit_for(exc)
        return
    except KeyboardInterrupt:
        say("bgvid: interrupted")
        raise SystemExit(130) from None

    def stop(signum, frame):  # SIGTERM stops the server like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    count = len(editor.strokes.load())
    say(f"Editing {input} ({editor.frames.count} frames, model {editor.model}); strokes: {editor.strokes.path}"
         + (f" ({count} so far)" if count else ""))
    say("Open this URL in a browser on this machine (Ctrl-C stops the editor):")
    click.echo(editor.url)
    if not no_browser:
        try:
            import webbrowser

            webbrowser.open(editor.url)
        except Exception:  # noqa: BLE001 - no browser is fine: the URL is printed
            pass
    try:
        editor.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            editor.close()
        except KeyboardInterrupt:
            pass
        signal.signal(signal.SIGTERM, previous)
    try:
        saved = len(editor.strokes.load())
        say(f"Stopped. {editor.strokes.path} holds {saved} stroke{'s' if saved != 1 else ''}; render with:\n"
             f"  {editor.describe()['run']}" if editor.strokes.path.exists() else "Stopped. Nothing was saved.")
    except BgvidError:
        say("Stopped.")
