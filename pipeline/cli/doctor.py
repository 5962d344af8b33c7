"""`bgvid doctor`: versions, devices, providers, codecs and the model cache."""

from __future__ import annotations

import os

import click


@click.command()
def doctor() -> None:
    """Diagnostics: versions, devices, ONNX Runtime providers, codecs, model cache."""
    import platform

    import av
    import numpy
    import onnxruntime

    from ..models.api import list_models
    from ..models.cache import cache_root

    click.echo(f"bgvid        {__import__('bgvid').__version__}  (Python {platform.python_version()}, "
               f"{platform.machine()})")
    click.echo(f"numpy        {numpy.__version__}")
    click.echo(f"onnxruntime  {onnxruntime.__version__}  providers: "
               f"{', '.join(onnxruntime.get_available_providers())}")
    click.echo(f"PyAV         {av.__version__}  (FFmpeg {av.ffmpeg_version_info})")
    from ..kernels._foreground import jit_status

    click.echo(f"CPU kernels  {jit_status()}")
    for codec in ("prores_aw", "prores_ks", "libvpx-vp9", "libx264", "aac", "libopus", "png"):
        try:
            av.codec.Codec(codec, "w")
            state = "ok"
        except Exception:  # noqa: BLE001 - any failure means unavailable
            state = "MISSING"
        click.echo(f"  encoder {codec:<11} {state}")
    from ..device import gpu_report

    for line in gpu_report():
        click.echo(line)
    click.echo(f"CPU cores    {os.cpu_count()}")
    click.echo(f"model cache  {cache_root()}")
    for e in list_models():
        click.echo(f"  {e.name:<17} {'cached' if e.cached else 'not cached'}")

