"""`bgvid run`: remove the background of one video, image or image sequence."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Optional

import click

from .common import Progress, describe, exit_for, on_signal, say

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


@click.command(epilog=FORMATS_HELP)
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file, folder or %04d pattern. Default: INPUT_alpha.mov beside the input "
                   "(INPUT_alpha.png for an image).")
@click.option("--model", "model", metavar="NAME|FILE.onnx",
              help="Force one model: a name from `bgvid models list`, or your own .onnx with a spec beside it. "
                   "Default: chosen by --subject (rvm for people, rvm + isnet for people and objects).")
@click.option("--subject", type=click.Choice(["auto", "person", "any"]), default="auto", show_default=True,
              help="What to keep when no --model is given. person: people (rvm, video matting). any: people and "
                   "every other salient subject, pets and objects (rvm fused with isnet, solid mattes; slower). "
                   "auto: decided once per input from frames spread over the whole file (any when there is no "
                   "person, or when the person model drops salient subjects); says what it chose and why.")
@click.option("--downsample-ratio", default="auto", show_default=True, metavar="auto|R",
              help="rvm only: how far the model shrinks the frame inside (0 < R <= 1); auto keeps the long "
                   "side at 512 px, Robust Video Matting's guideline (256-512).")
@click.option("--model-spec", type=click.Path(path_type=Path), help="Spec (TOML/JSON) for --model FILE.onnx.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="Where to run. cuda: the whole frame path on the GPU (CuPy + ONNX Runtime CUDA; unverified on a "
                   "GPU in this release); auto picks it when every piece is there and says so.")
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
@click.option("--clip-black", type=float, default=0.0, show_default=True, metavar="B",
              help="Levels: alpha <= B becomes 0 (0 <= B < W).")
@click.option("--clip-white", type=float, default=1.0, show_default=True, metavar="W",
              help="Levels: alpha >= W becomes 1, values between B and W are stretched (B < W <= 1).")
@click.option("--no-cleanup", is_flag=True,
              help="Keep a per-frame model's matte as it is (default: solid subjects: holes filled, islands and "
                   "haze removed, soft values only along the edges).")
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
def run(input: Path, output, model, subject, downsample_ratio, model_spec, device, provider, background, matte, frames,
        refine, smooth, no_smooth, overrides, choke, feather, clip_black, clip_white, no_cleanup, no_decontaminate,
        batch_size, no_audio, force, quiet, as_json, progress_mode) -> None:
    """Remove the background of INPUT (a video, an image, a folder of frames or a %05d pattern).

    Exit status: 0 done, 2 bad usage or bad input, 1 other failure, 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM). Default OUTPUT: INPUT_alpha.mov; INPUT_matte.mov with --matte;
    INPUT_bg.mp4 with --background; INPUT_alpha.png for an image.
    """
    from ..apps.run import remove_background

    report = (lambda m: None) if quiet else say
    progress = Progress("none" if quiet and progress_mode == "auto" else progress_mode)
    signal.signal(signal.SIGTERM, on_signal)
    result = None
    error: Optional[BaseException] = None
    try:
        result = remove_background(
            input, output, model=model, model_spec=model_spec, device=device, provider=provider,
            background=background, matte=matte, frames=frames, batch_size=batch_size, audio=not no_audio,
            refine=refine, smooth=None if no_smooth or smooth == 0 else ("auto" if smooth is None else smooth),
            overrides=overrides, downsample_ratio=downsample_ratio, decontaminate=not no_decontaminate,
            choke=choke, feather=feather, subject=subject, cleanup=False if no_cleanup else "auto",
            clip_black=clip_black, clip_white=clip_white,
            overwrite=force, report=report, progress=progress)
        progress(result.frames, result.frames, final=True)
    except BaseException as exc:  # noqa: BLE001 - mapped to an exit code below
        error = exc
    if as_json:
        payload = result.to_json() if result else {"output": str(output) if output else None, "frames": 0}
        if error is not None:
            payload["error"] = describe(error)
        click.echo(json.dumps(payload))
    elif result and not quiet:
        noun = "frame" if result.frames == 1 else "frames"
        say(f"Wrote {result.output} ({result.frames} {noun}, {result.fps:.1f} fps, model {result.model})")
    if error is not None:
        exit_for(error, quiet=as_json)

