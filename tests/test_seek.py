"""A range that starts far into a video seeks (keyframe before it, decode forward) instead of decoding
every frame before it; the frames, indices and timestamps must be exactly those of decoding from the
start, for every kind of stream the reader takes."""

from __future__ import annotations

import numpy as np
import pytest
from _clips import make_clip

from bgvid.io.reader import SEEK_MIN_FRAMES, VideoReader, _StreamDecoder


def _frames(path, frames, monkeypatch=None, seek=True):
    if not seek:
        monkeypatch.setattr("bgvid.io.reader.SEEK_MIN_FRAMES", 10 ** 9)
    with VideoReader(path, frames=frames, batch_size=5) as reader:
        out = [(int(i), int(p), rgb.copy())
               for b in reader for i, p, rgb in zip(b.frame_index, b.pts, b.rgb, strict=False)]
    monkeypatch.undo() if not seek else None
    return out


def _same(a, b):
    assert [(i, p) for i, p, _ in a] == [(i, p) for i, p, _ in b]
    for (_, _, x), (_, _, y) in zip(a, b, strict=False):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["juggle.mp4", "bedroom.mp4", "carphone.mp4"])
def test_seeking_equals_decoding_from_the_start_on_real_footage(media, monkeypatch, name):
    src = media / "clips" / name
    for rng in [(SEEK_MIN_FRAMES, SEEK_MIN_FRAMES + 6), (101, 109)]:
        seeking = _frames(src, rng)
        assert [i for i, _, _ in seeking] == list(range(rng[0], rng[1] + 1))
        _same(seeking, _frames(src, rng, monkeypatch, seek=False))


def test_seeking_really_skips_the_frames_before_the_range(tmp_path, monkeypatch):
    src = make_clip(tmp_path / "intra.mov", frames=220, codec="prores_ks", pix_fmt="yuv422p10le")  # all keyframes
    decoded = []
    original = _StreamDecoder.frames

    def counting(self):
        for frame in original(self):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(_StreamDecoder, "frames", counting)
    with VideoReader(src, frames=(200, 203)) as reader:
        assert [int(i) for b in reader for i in b.frame_index] == [200, 201, 202, 203]
    assert len(decoded) <= 8  # from the keyframe at 200, not from frame 0


@pytest.mark.parametrize("codec,ext", [("prores_ks", ".mov"), ("libvpx-vp9", ".webm"), ("libx264", ".mkv")])
def test_seeking_equals_decoding_from_the_start_per_container(tmp_path, monkeypatch, codec, ext):
    src = make_clip(tmp_path / f"clip{ext}", frames=80, codec=codec,
                    pix_fmt="yuv422p10le" if codec == "prores_ks" else None)
    rng = (SEEK_MIN_FRAMES + 5, 75)
    _same(_frames(src, rng), _frames(src, rng, monkeypatch, seek=False))
