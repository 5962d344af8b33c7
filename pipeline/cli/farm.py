"""`bgvid farm`: many shots in chunks on Ray."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from ..errors import BgvidError
from .common import Interrupted, Progress, describe, exit_for, on_signal, say

FARM_EPILOG = """\b
Examples:
  bgvid farm shots/*.mov --model selfie           local Ray on this machine
  bgvid farm job.toml --address auto              an existing Ray cluster
  bgvid farm a.mp4 b.mp4 --chunk-size 50 --format webm --output-dir renders/

\b
Job file (TOML; paths relative to it):
  chunk_size = 100                 # optional: chunk_size, output_dir, format, retries
  output_dir = "renders"
  format = "mov"                   # mov (ProRes 4444) | webm (VP9 alpha)
  [options]                        # every shot; names as on `bgvid run`
  model = "selfie"
  [[shot]]
  input = "plates/sh010.mov"
  [[shot]]
  input = "plates/sh020.mov"
  output = "renders/sh020_alpha.mov"
  smooth = 0.3                     # this shot only

\b
Each chunk is a Ray task running `bgvid run SHOT --frames A-B` into
OUTPUT.parts/; when a shot's chunks are done they are joined into OUTPUT
(`bgvid join`, the source's audio laid back in) and the parts removed. The
manifest (JOB.manifest.json beside a job file, else bgvid-farm.json beside the
first output) records every chunk: key, checksum, seconds, attempts, node.
Run the same command again to resume: chunks done under the same input hash,
options and model hash are skipped; a changed option renders again. A chunk
that fails is retried (--retries); one that keeps failing fails its shot, the
other shots finish, and the exit status is 1. On a cluster every node needs
bgvid installed and the inputs and outputs on a shared file system.
"""


@click.command("farm", epilog=FARM_EPILOG)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--chunk-size", type=int, help="Frames per chunk (default: 8x the frames a chunk renders before its "
                                               "first one to warm up, at least 100; 256 for rvm).")
@click.option("--address", metavar="ADDR", help="Join this Ray cluster (auto, HOST:6379, ray://HOST:10001). "
                                                "Default: start a local Ray on this machine.")
@click.option("--num-cpus", type=int, help="CPUs of the local Ray (default: all).")
@click.option("--cpus-per-chunk", type=float, default=1, show_default=True, help="Ray CPUs per chunk task.")
@click.option("--gpus-per-chunk", type=float, help="Ray GPUs per chunk task, may be a fraction "
                   "(default 1 where the cluster has GPUs or with --device cuda, else 0).")
@click.option("--retries", type=int, help="Ray retries of a failed chunk (default 2).")
@click.option("--output-dir", type=click.Path(path_type=Path), help="Where outputs go (default: beside each input).")
@click.option("--format", "fmt", type=click.Choice(["mov", "webm"]), help="Output format (default mov).")
@click.option("--manifest", type=click.Path(path_type=Path), help="Manifest file (the resume record).")
@click.option("--keep-parts", is_flag=True, help="Keep each shot's parts after joining.")
@click.option("--model", metavar="NAME|FILE.onnx", help="Force one model (as `bgvid run`; default: by --subject).")
@click.option("--subject", type=click.Choice(["auto", "person", "any"]),
              help="As `bgvid run --subject` (default auto: decided once per shot, every chunk renders the same).")
@click.option("--clip-black", type=float, metavar="B", help="As `bgvid run --clip-black`.")
@click.option("--clip-white", type=float, metavar="W", help="As `bgvid run --clip-white`.")
@click.option("--no-cleanup", is_flag=True, default=None, help="As `bgvid run --no-cleanup`.")
@click.option("--matte", is_flag=True, default=None, help="Write the matte alone.")
@click.option("--refine", type=click.Choice(["none", "guided"]), help="As `bgvid run --refine`.")
@click.option("--smooth", type=float, metavar="STRENGTH", help="As `bgvid run --smooth`.")
@click.option("--no-smooth", is_flag=True, default=None, help="Turn temporal smoothing off.")
@click.option("--overrides", type=click.Path(path_type=Path), metavar="PATH", help="As `bgvid run --overrides`.")
@click.option("--choke", type=float, metavar="PX", help="As `bgvid run --choke`.")
@click.option("--feather", type=float, metavar="PX", help="As `bgvid run --feather`.")
@click.option("--no-decontaminate", is_flag=True, default=None, help="As `bgvid run --no-decontaminate`.")
@click.option("--downsample-ratio", metavar="auto|R", help="As `bgvid run --downsample-ratio` (rvm).")
@click.option("--device", metavar="auto|cpu|cuda", help="Where each chunk runs. auto (default): on the GPU Ray "
                                                     "grants it where the cluster has GPUs, else the CPU.")
@click.option("--batch-size", type=int, help="Frames per model call.")
@click.option("--no-audio", is_flag=True, default=None, help="Drop the audio.")
@click.option("--force", is_flag=True, help="Replace existing outputs this job did not write.")
@click.option("--quiet", "-q", is_flag=True, help="No messages, no progress.")
@click.option("--json", "as_json", is_flag=True, help="Print the job's result as JSON on stdout.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "bar", "json", "none"]), default="auto",
              show_default=True, help="Progress over all shots on stderr: a bar, or one JSON line per second.")
def farm(inputs, chunk_size, address, num_cpus, cpus_per_chunk, gpus_per_chunk, retries, output_dir, fmt,
         manifest, keep_parts, model, subject, clip_black, clip_white, no_cleanup, matte, refine, smooth, no_smooth,
         overrides, choke, feather, no_decontaminate, downsample_ratio, device, batch_size, no_audio, force, quiet,
         as_json, progress_mode) -> None:
    """Render videos (or the shots of a TOML job file) in chunks on Ray, join each, resume on rerun.

    Exit status: 0 every shot done, 1 a shot failed (the others still finish), 2 bad usage or
    input, 130/143 interrupted (rerun to resume).
    """
    from ..apps.farm import DEFAULT_RETRIES, load_job, make_shots, run_farm

    report = (lambda m: None) if quiet else say
    progress = Progress("none" if quiet and progress_mode == "auto" else progress_mode)
    received = []

    def on_sigterm(signum, frame):  # Ray may re-raise it as a plain KeyboardInterrupt: remember which
        received.append(signum)
        on_signal(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    options = {k: v for k, v in {
        "model": model, "subject": subject, "clip_black": clip_black, "clip_white": clip_white,
        "matte": matte, "refine": refine, "smooth": smooth,
        "overrides": str(overrides) if overrides else None,
        "choke": choke, "feather": feather, "downsample_ratio": downsample_ratio, "device": device,
        "batch_size": batch_size}.items() if v is not None}
    if no_smooth:
        options["smooth"] = None
    if no_decontaminate:
        options["decontaminate"] = False
    if no_cleanup:
        options["cleanup"] = False
    if no_audio:
        options["audio"] = False
    result, error = None, None
    try:
        jobs = [p for p in inputs if p.suffix.lower() == ".toml"]
        if jobs and len(inputs) > 1:
            raise BgvidError("give one job file, or videos, not both")
        settings, job_file = {}, None
        if jobs:
            job_file = jobs[0]
            shots, settings = load_job(job_file, options=options)
            if output_dir or fmt:
                say("bgvid: --output-dir/--format apply to videos given on the command line; the job file sets "
                     "its own (output_dir, format)")
        else:
            shots = make_shots(inputs, options=options, output_dir=output_dir, fmt=fmt or "mov")
        from ..apps.farm import default_manifest

        made = Path(settings["output_dir"]) if job_file is not None and "output_dir" in settings else output_dir
        if made is not None:
            if job_file is not None and not made.is_absolute():
                made = job_file.parent / made
            made.mkdir(parents=True, exist_ok=True)  # named outright: create it

        result = run_farm(
            shots, chunk_size=chunk_size or settings.get("chunk_size"), address=address,
            manifest=manifest or default_manifest(shots, job_file),
            retries=retries if retries is not None else int(settings.get("retries", DEFAULT_RETRIES)),
            cpus_per_chunk=cpus_per_chunk, gpus_per_chunk=gpus_per_chunk, num_cpus=num_cpus,
            keep_parts=keep_parts, overwrite=force, report=report, progress=progress)
        progress(sum(s.frames for s in result.shots), sum(s.frames for s in result.shots), final=True)
    except BaseException as exc:  # noqa: BLE001 - mapped to an exit code below
        error = exc
        if isinstance(exc, KeyboardInterrupt) and received and not isinstance(exc, Interrupted):
            error = Interrupted(received[0])
    if as_json:
        payload = result.to_json() if result else {"shots": []}
        if error is not None:
            payload["error"] = describe(error)
        click.echo(json.dumps(payload))
    elif result and not quiet:
        for s in result.shots:
            extra = f" ({s.rendered} rendered, {s.reused} reused)" if s.status == "done" else ""
            say(f"  {s.status:<10} {s.output}{extra}" + (f": {s.error}" if s.error else ""))
        say(f"{len(result.shots) - len(result.failed)} of {len(result.shots)} shots done in {result.seconds:.1f}s; "
             f"manifest {result.manifest}")
    if error is not None:
        if isinstance(error, KeyboardInterrupt) and not quiet:
            say("bgvid: the manifest keeps the finished chunks; run the same command again to resume")
        exit_for(error, quiet=as_json)
    if result and result.failed:
        say(f"bgvid: error: {len(result.failed)} shot(s) failed: "
             + "; ".join(f"{s.input}: {s.error}" for s in result.failed))
        raise SystemExit(1)
