"""The `bgvid` command group: one module per command (bgvid.cli.run, .cam, ...), joined here. No command
module imports this one."""

from __future__ import annotations

import sys

import click

from .cam import cam
from .common import say
from .doctor import doctor
from .edit import edit
from .evaluate import eval_command
from .farm import farm
from .join import join
from .models import models
from .run import run


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



for _command in (run, eval_command, models, doctor, cam, edit, farm, join):
    cli.add_command(_command)


def main() -> None:
    from .process import limit_malloc_arenas

    limit_malloc_arenas()  # before any stage thread exists
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        say("bgvid: interrupted")
        sys.exit(130)

