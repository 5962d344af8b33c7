"""Corrections that follow the picture: keyframed strokes and PNG layers (stages/track.py, overrides.py).

The clip: a 40 px textured square moving 3 px per frame over a textured background, as a lossless PNG
sequence, and a model that sees nothing (alpha 0 everywhere: a tiny ONNX graph written here), so every
bit of alpha on the output comes from the corrections. What is checked is what a user sees: where the
matte is opaque on a later frame, and that a --frames chunk renders what the full run does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _track_clips import SIDE, STEP, X0, Y0, H, W, make_square_clip, square_at
from _track_clips import blind_model as _blind_model
from _track_clips import paint_square as _paint_square

import bgvid
from bgvid import InputError

FRAMES = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_square_clip(tmp_path_factory.mktemp("square") / "frames", FRAMES)


@pytest.fixture(scope="module")
def blind_model(tmp_path_factory) -> Path:
    """A model that sees nothing: alpha 0 on every pixel of every frame."""
    return _blind_model(tmp_path_factory.mktemp("model"))


def paint_square(t: int, **extra) -> dict:
    """A restore stroke that fills the square as it is on frame t: five hard 10 px rows, on every frame."""
    return _paint_square(t, FRAMES, **extra)


def mattes(clip, model, strokes, tmp_path, frames=None, **kw) -> dict[int, np.ndarray]:
    path = tmp_path / f"overrides_{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(strokes))
    return {i: a for i, _, _, a in bgvid.iter_mattes(clip, model=str(model), overrides=path, frames=frames,
                                                     device="cpu", **kw)}


# ------------------------------------------------------------------------------------------ what a user sees

def test_a_restore_painted_on_frame_0_follows_the_square_to_frame_20(clip, blind_model, tmp_path):
    tracked = mattes(clip, blind_model, [paint_square(0, keyframe=0)], tmp_path)
    in_place = mattes(clip, blind_model, [paint_square(0)], tmp_path)
    assert (tracked[0] == in_place[0]).all()  # on its key frame: exactly as painted
    assert (tracked[0][square_at(0)] >= 0.9).mean() >= 0.95
    a = tracked[20]
    assert (a[square_at(20)] >= 0.9).mean() >= 0.9, f"only {(a[square_at(20)] >= 0.9).mean():.3f} of the square"
    assert a[square_at(0)].max() == 0.0  # where the square was: the model's matte, untouched
    grown = np.zeros((H, W), bool)
    grown[Y0 - 2:Y0 + SIDE + 2, X0 + 60 - 2:X0 + 60 + SIDE + 2] = True
    assert a[~grown].max() < 0.5  # nothing beyond two pixels around the square turns to foreground
    # The same stroke left in place misses the square by then.
    assert (in_place[20][square_at(20)] >= 0.9).mean() < 0.1


def test_a_stroke_painted_on_a_later_frame_follows_the_square_backwards(clip, blind_model, tmp_path):
    a = mattes(clip, blind_model, [paint_square(20, keyframe=20)], tmp_path)
    assert (a[0][square_at(0)] >= 0.9).mean() >= 0.9
    assert a[0][square_at(20)].max() < 0.1  # no foreground where the square will be
    assert (a[12][square_at(12)] >= 0.9).mean() >= 0.9


def test_a_remove_stroke_follows_too(clip, blind_model, tmp_path):
    """Over a matte the model fills (a restore of the whole frame first), a remove stroke keeps cutting
    the square out as it moves."""
    full = {"frames": f"0-{FRAMES - 1}", "mode": "restore", "size": 1000, "softness": 0, "points": [[100, 64]]}
    a = mattes(clip, blind_model, [full, paint_square(0, mode="remove", keyframe=0)], tmp_path)
    assert (a[20][square_at(20)] <= 0.1).mean() >= 0.9
    assert a[20][square_at(0)].min() == 1.0


def test_two_key_frames_of_one_correction_blend_between_them(clip, blind_model, tmp_path):
    """A drift fix: the correction's second key frame, painted 12 px lower (where a user would redraw it),
    is exact on its own frame and blends with the first one in between."""
    low = paint_square(20, keyframe=20, id="ball")
    low["points"] = [[x, y + 12] for x, y in low["points"]]
    a = mattes(clip, blind_model, [paint_square(0, keyframe=0, id="ball"), low], tmp_path)
    exact = mattes(clip, blind_model, [{k: v for k, v in low.items() if k not in ("keyframe", "id")}], tmp_path)
    assert np.array_equal(a[20], exact[20])  # a key frame is exactly as painted
    # Frame 10, halfway: the upper rows of the square carry only the first key's half (weight 0.5 each),
    # the middle rows both.
    rows, cols = square_at(10)
    top = a[10][Y0 + 2:Y0 + 8, cols.start + 6:cols.stop - 6]
    middle = a[10][Y0 + 16:Y0 + 30, cols.start + 6:cols.stop - 6]
    assert 0.35 <= np.median(top) <= 0.65, np.median(top)
    assert np.median(middle) >= 0.9
    # Past the last key frame, the nearest key's propagation alone.
    assert a[24][Y0 + SIDE + 6, X0 + STEP * 24 + 20] >= 0.9


def test_a_png_layer_named_with_a_key_frame_follows_the_picture(clip, blind_model, tmp_path):
    import cv2

    folder = tmp_path / "layers"
    folder.mkdir()
    rgba = np.zeros((H, W, 4), np.uint8)
    rows, cols = square_at(4)
    rgba[rows, cols] = 255  # white, full coverage, on the square as it is on frame 4
    cv2.imwrite(str(folder / f"{0:06d}-{FRAMES - 1:06d}@{4:06d}.png"), rgba)
    a = {i: m for i, _, _, m in bgvid.iter_mattes(clip, model=str(blind_model), overrides=folder, device="cpu")}
    assert (a[4][square_at(4)] == 1.0).all()
    assert (a[20][square_at(20)] >= 0.9).mean() >= 0.9
    assert (a[0][square_at(0)] >= 0.9).mean() >= 0.9
    assert a[20][square_at(4)].max() < 0.5  # no foreground left where it was painted


# ------------------------------------------------------------------------------------------ chunks

def test_a_chunk_gives_the_frames_of_the_full_run(clip, blind_model, tmp_path):
    """A chunk that starts after one key frame (the tracker decodes from it) and before another, with a
    correction of two key frames across the seam: the same mattes as the full run, bit for bit."""
    strokes = [paint_square(3, keyframe=3),
               paint_square(0, keyframe=0, id="pair", mode="remove", size=14),
               paint_square(22, keyframe=22, id="pair", mode="remove", size=14),
               paint_square(18, keyframe=18, frames="14-24")]
    full = mattes(clip, blind_model, strokes, tmp_path)
    chunk = mattes(clip, blind_model, strokes, tmp_path, frames="12-24")
    assert sorted(chunk) == list(range(12, FRAMES))
    for i in chunk:
        assert np.array_equal(chunk[i], full[i]), f"frame {i}: max difference {np.abs(chunk[i] - full[i]).max()}"
    assert (full[16][square_at(16)] >= 0.9).mean() >= 0.9  # the chunk's frames do carry the corrections


def test_a_keyframed_stroke_renders_the_same_into_a_png_sequence(clip, blind_model, tmp_path):
    """bgvid run itself (to a 16-bit PNG matte sequence) with a --frames chunk, as a render farm runs it."""
    from PIL import Image

    strokes = tmp_path / "o.json"
    strokes.write_text(json.dumps([paint_square(0, keyframe=0)]))
    out = tmp_path / "matte"
    bgvid.remove_background(clip, out, model=str(blind_model), matte=True, frames="15-20", overrides=strokes,
                            device="cpu")
    a = np.asarray(Image.open(out / "000020.png")).astype(np.float64) / 65535
    assert (a[square_at(20)] >= 0.9).mean() >= 0.9 and a[square_at(0)].max() == 0.0


# ------------------------------------------------------------------------------------------ on a device

def test_the_device_chain_tracks_with_only_patches_crossing(clip, blind_model, tmp_path):
    from _fakedevice import FakeDevice

    strokes = tmp_path / "o.json"
    strokes.write_text(json.dumps([paint_square(0, keyframe=0)]))
    dev = FakeDevice()
    out = tmp_path / "dev"
    result = bgvid.remove_background(clip, out, model=str(blind_model), matte=True, frames="0-20",
                                     overrides=strokes, device=dev, batch_size=4)
    t = dev.transfers
    assert t["implicit"] == 0, dict(t)
    batches = -(-result.frames // 4)
    assert t["upload"] == batches and t["download"] == batches, dict(t)
    assert t["side_down"] == result.frames  # the smoother's grey frames (the tracker decodes its own)
    assert dev.branches["overrides"] >= 1
    cpu = tmp_path / "cpu"
    bgvid.remove_background(clip, cpu, model=str(blind_model), matte=True, frames="0-20", overrides=strokes,
                            device="cpu", batch_size=4)
    from PIL import Image

    for name in ("000000.png", "000010.png", "000020.png"):
        a = np.asarray(Image.open(cpu / name)).astype(np.int64)
        b = np.asarray(Image.open(out / name)).astype(np.int64)
        assert np.abs(a - b).max() <= 64, name  # within one 10-bit step (16-bit PNG)


# ------------------------------------------------------------------------------------------ the format

def _refusal(tmp_path, strokes, width=W, height=H) -> str:
    from bgvid.stages.overrides import Overrides

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(strokes))
    with pytest.raises(InputError) as info:
        Overrides.load(path, width=width, height=height)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("keyframe, detail", [
    (30, "outside the stroke's frames 0-24"),
    (-1, "from 0"),
    (3.0, "JSON integer"),
    ("3", "JSON integer"),
    (True, "JSON integer"),
    (None, "JSON integer"),
    (10 ** 50, "at most 40"),
])
def test_a_bad_keyframe_is_an_error_naming_the_file_and_the_stroke(tmp_path, keyframe, detail):
    strokes = [paint_square(0), paint_square(0, keyframe=keyframe)]
    message = _refusal(tmp_path, strokes)
    assert "stroke [1]" in message and "keyframe" in message and detail in message, message


def test_a_huge_keyframe_number_is_refused_before_conversion(tmp_path):
    from bgvid.stages.overrides import Overrides

    path = tmp_path / "bad.json"
    path.write_text('[{"frames": "0-5", "mode": "restore", "size": 4, "softness": 0, "points": [[1, 1]], '
                    '"keyframe": 1' + "0" * 5000 + "}]")
    with pytest.raises(InputError, match=r"stroke \[0\].*keyframe"):
        Overrides.load(path, width=W, height=H)


@pytest.mark.parametrize("group, detail", [(7, "id must be a non-empty string"), ("", "non-empty"),
                                           ("x" * 201, "at most 200")])
def test_a_bad_id_is_an_error(tmp_path, group, detail):
    message = _refusal(tmp_path, [paint_square(0, keyframe=0, id=group)])
    assert "stroke [0]" in message and detail in message


def test_an_id_without_a_keyframe_keeps_its_old_meaning_unless_it_names_a_tracked_correction(tmp_path):
    from bgvid.stages.overrides import Overrides

    plain, labelled = tmp_path / "plain.json", tmp_path / "labelled.json"
    plain.write_text(json.dumps([paint_square(0)]))
    labelled.write_text(json.dumps([paint_square(0, id=5), paint_square(3, id="note")]))
    matte = np.full((H, W), 0.25, np.float32)
    a = Overrides.load(plain, width=W, height=H).apply(matte, 7)
    b = Overrides.load(labelled, width=W, height=H)
    assert not b.tracked
    c = Overrides.load(plain, width=W, height=H)
    assert np.array_equal(a, c.apply(matte, 7))
    message = _refusal(tmp_path, [paint_square(0, keyframe=0, id="a"), paint_square(5, id="a")])
    assert "stroke [1]" in message and "has no keyframe" not in message and "keyframe" in message


def test_a_key_frame_past_the_end_of_the_video_is_an_error_naming_the_stroke(clip, blind_model, tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps([paint_square(0, frames="0-40", keyframe=30)]))
    with pytest.raises(InputError, match=r"stroke \[0\]: keyframe 30 is past the end of the video \(25 frames"):
        list(bgvid.iter_mattes(clip, model=str(blind_model), overrides=path, device="cpu"))


def test_a_png_key_frame_outside_its_range_is_an_error_naming_the_file(tmp_path):
    from bgvid.stages.overrides import Overrides

    folder = tmp_path / "layers"
    folder.mkdir()
    from PIL import Image

    Image.new("LA", (W, H)).save(folder / "000010-000020@000030.png")
    with pytest.raises(InputError, match=r"000010-000020@000030\.png: key frame 30 .* outside"):
        Overrides.load(folder, width=W, height=H)


def test_too_many_key_frames_on_one_frame_are_refused(tmp_path):
    from bgvid.stages.overrides import MAX_KEYS_PER_FRAME

    strokes = [paint_square(0, frames="0-500", keyframe=k) for k in range(MAX_KEYS_PER_FRAME + 1)]
    message = _refusal(tmp_path, strokes)
    assert f"stroke [{MAX_KEYS_PER_FRAME}]" in message and f"limit of {MAX_KEYS_PER_FRAME}" in message


def test_bgvid_run_stops_on_a_bad_keyframe_with_one_line_and_exit_2(clip, blind_model, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "o.json"
    path.write_text(json.dumps([paint_square(0, keyframe=0), paint_square(0, keyframe=2.5)]))
    proc = subprocess.run([sys.executable, "-m", "bgvid", "run", str(clip), "--model", str(blind_model),
                           "--overrides", str(path), "-o", str(tmp_path / "out.mov"), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "stroke [1]" in lines[0] and "keyframe" in lines[0], lines
    assert not (tmp_path / "out.mov").exists()
