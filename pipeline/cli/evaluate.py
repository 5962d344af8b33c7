"""`bgvid eval`: score an output against ground-truth alpha."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import BgvidError
from .common import exit_for


@click.command("eval")
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
    from ..eval.evaluate import evaluate

    try:
        scores = evaluate(output, truth, channel=channel or "alpha", first=first)
    except BgvidError as exc:
        exit_for(exc)
    if as_json:
        click.echo(json.dumps(scores))
        return
    click.echo(f"{'frames':<8}{'MAD':>9}{'MSE':>9}{'Grad':>9}{'Conn':>9}{'dtSSD':>9}{'IoU':>8}")
    click.echo(f"{scores['frames']:<8}{scores['mad']:>9.2f}{scores['mse']:>9.2f}{scores['grad']:>9.2f}"
               f"{scores['conn']:>9.2f}{scores['dtssd']:>9.2f}{scores['iou']:>8.3f}")
    if scores["binary_truth"]:
        click.echo("(binary truth masks: IoU is the meaningful figure)")

