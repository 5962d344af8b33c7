"""Manual override files: PNG layers and JSON brush strokes (bgvid.stages.overrides)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from bgvid import FrameBatch, InputError
from bgvid.stages.overrides import Overrides, OverrideStage, rasterize_stroke

W, H = 64, 48


def _matte(value: float = 0.5) -> np.ndarray:
    return np.full((H, W), value, dtype=np.float32)


def _write_json(path, strokes) -> None:
    path.write_text(json.dumps(strokes))


def _stroke(**kw) -> dict:
    stroke = {"frames": "0", "mode": "remove", "size": 20, "softness": 0.5, "points": [[32, 24]]}
    stroke.update(kw)
    return stroke


def _load(path) -> Overrides:
    return Overrides.load(path, width=W, height=H)


def _reference_coverage(points, size, softness) -> np.ndarray:
    """Independent truth in float64 over the whole frame: distance from each pixel centre
    (i + 0.5, j + 0.5) to the polyline, smoothstep from r(1 - softness) to r."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    pts = np.asarray(points, dtype=np.float64)
    d = np.full((H, W), np.inf)
    for a, b in zip(pts, pts[1:], strict=False) if len(pts) > 1 else [(pts[0], pts[0])]:
        ab = b - a
        t = np.zeros_like(xx)
        if ab.any():
            t = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / (ab @ ab), 0, 1)
        d = np.minimum(d, np.hypot(xx - (a[0] + t * ab[0]), yy - (a[1] + t * ab[1])))
    r = size / 2
    s = np.clip((r - d) / (r * softness), 0, 1)
    return s * s * (3 - 2 * s)


# ---------------------------------------------------------------- strokes


def test_remove_stroke_is_exactly_zero_in_its_core_and_leaves_far_pixels_alone(tmp_path):
    path = tmp_path / "strokes.json"
    _write_json(path, [_stroke(size=20, softness=0.5, points=[[20, 24], [44, 24]])])
    alpha = np.random.default_rng(0).random((H, W), dtype=np.float32)
    out = _load(path).apply(alpha, 0)
    assert out is not alpha and out.dtype == np.float32
    # core: within r(1 - softness) = 5 px of the segment
    assert (out[20:28, 20:44] == 0.0).all()
    # soft edge: strictly between 0 and the input
    edge = out[24 - 8, 32], alpha[24 - 8, 32]
    assert 0.0 < edge[0] < edge[1]
    # far away: bit-identical
    assert np.array_equal(out[:10], alpha[:10]) and np.array_equal(out[:, :8], alpha[:, :8])
    assert np.array_equal(alpha, np.random.default_rng(0).random((H, W), dtype=np.float32))  # input untouched


def test_restore_stroke_is_exactly_one_in_its_core(tmp_path):
    path = tmp_path / "strokes.json"
    _write_json(path, [_stroke(mode="restore", size=16, softness=0.25, points=[[32, 24]])])
    out = _load(path).apply(_matte(0.3), 0)
    assert out[24, 32] == 1.0 and (out[21:27, 29:35] == 1.0).all()
    assert 0.3 < out[24, 32 + 7] < 1.0  # d = 7.5: in the soft band (6..8)
    assert out[0, 0] == np.float32(0.3)


def test_stroke_coverage_matches_distance_to_polyline_and_ignores_point_spacing():
    points = [[5.0, 40.0], [30.0, 10.0], [58.0, 30.0]]
    cov = rasterize_stroke(points, size=14, softness=0.6, width=W, height=H)
    assert cov.shape == (H, W) and cov.dtype == np.float32
    np.testing.assert_allclose(cov, _reference_coverage(points, 14, 0.6), atol=1e-4)
    # the same polyline with many extra points on it rasterises the same
    pairs = zip(points[:-1], points[1:], strict=True)
    dense = [p for a, b in pairs for p in np.linspace(a, b, 37)[:-1].tolist()] + [points[-1]]
    np.testing.assert_allclose(rasterize_stroke(dense, size=14, softness=0.6, width=W, height=H), cov, atol=1e-5)


def test_softness_zero_is_a_hard_edge():
    cov = rasterize_stroke([[32, 24]], size=10, softness=0.0, width=W, height=H)
    assert set(np.unique(cov).tolist()) == {0.0, 1.0}
    assert cov[24, 32 + 4] == 1.0  # pixel centre 4.5 px away, radius 5
    assert cov[24, 32 + 5] == 0.0  # 5.5 px away


def test_softness_one_falls_off_from_the_centre():
    cov = rasterize_stroke([[32.5, 24.5]], size=20, softness=1.0, width=W, height=H)
    assert cov[24, 32] == 1.0  # only the exact centre is full
    assert 0.0 < cov[24, 33] < 1.0 and cov[24, 33] > cov[24, 36] > 0.0


def test_stroke_outside_the_frame_changes_nothing(tmp_path):
    path = tmp_path / "strokes.json"
    _write_json(path, [_stroke(points=[[-100, -100], [-50, -80]]), _stroke(points=[[63, 47], [500, 500]])])
    out = _load(path).apply(_matte(), 0)
    assert np.array_equal(out[:30, :50], _matte()[:30, :50]) and out[47, 63] == 0.0


def test_stroke_over_frames_3_to_5_touches_only_those_frames(tmp_path):
    path = tmp_path / "strokes.json"
    _write_json(path, [_stroke(frames="3-5")])
    overrides = _load(path)
    assert overrides.frames() == {3, 4, 5}
    for f in range(8):
        alpha = _matte()
        out = overrides.apply(alpha, f)
        if f in (3, 4, 5):
            assert out[24, 32] == 0.0
        else:
            assert out is alpha


# ---------------------------------------------------------------- PNG layers


def _png(path, grey, alpha=None) -> None:
    grey = np.broadcast_to(np.asarray(grey, dtype=np.uint8), (H, W))
    if alpha is None:
        Image.fromarray(np.ascontiguousarray(grey), "L").save(path)
    else:
        alpha = np.broadcast_to(np.asarray(alpha, dtype=np.uint8), (H, W))
        Image.fromarray(np.stack([grey, alpha], axis=-1), "LA").save(path)


def test_png_range_applies_to_every_frame_in_it_and_no_other(tmp_path):
    _png(tmp_path / "000002-000004.png", 255)
    overrides = _load(tmp_path)
    assert overrides.frames() == {2, 3, 4}
    for f in range(7):
        out = overrides.apply(_matte(0.25), f)
        assert (out == (1.0 if 2 <= f <= 4 else 0.25)).all(), f


def test_png_grey_128_with_full_coverage_gives_128_over_255_exactly(tmp_path):
    _png(tmp_path / "000000.png", 128)
    Image.fromarray(np.full((H, W, 3), 128, np.uint8), "RGB").save(tmp_path / "000001.png")
    import cv2
    cv2.imwrite(str(tmp_path / "000002.png"), np.full((H, W), 32768, np.uint16))
    overrides = _load(tmp_path)
    assert (overrides.apply(_matte(), 0) == np.float32(128 / 255)).all()
    assert (overrides.apply(_matte(), 1) == np.float32(128 / 255)).all()  # RGB: luma of a neutral grey
    assert (overrides.apply(_matte(), 2) == np.float32(32768 / 65535)).all()  # 16-bit


def test_png_alpha_is_coverage(tmp_path):
    alpha_channel = np.zeros((H, W), np.uint8)
    alpha_channel[10:20, 10:30] = 128  # about half
    alpha_channel[30:40, 10:30] = 255
    _png(tmp_path / "000000.png", 255, alpha_channel)
    a_in = _matte(0.2)
    out = _load(tmp_path).apply(a_in, 0)
    c = np.float32(128 / 255)
    assert np.allclose(out[10:20, 10:30], 0.2 * (1 - c) + 1.0 * c, atol=1e-6)  # ~0.6: half way
    assert (out[30:40, 10:30] == 1.0).all()
    assert np.array_equal(out[alpha_channel == 0], a_in[alpha_channel == 0])


# ---------------------------------------------------------------- order


def test_later_json_stroke_wins_over_png_on_the_same_pixels(tmp_path):
    _png(tmp_path / "000000.png", 255)  # restore everything
    _write_json(tmp_path / "overrides.json", [_stroke(frames="0", mode="remove", size=10, softness=0)])
    out = _load(tmp_path).apply(_matte(), 0)
    assert out[24, 32] == 0.0 and out[0, 0] == 1.0


def test_png_layers_apply_in_order_of_first_frame(tmp_path):
    # By name "0000003.png" sorts first; by first frame the range (from 2) applies first, so the
    # frame-3 layer is applied last and wins.
    _png(tmp_path / "000002-000009.png", 0)
    _png(tmp_path / "0000003.png", 255)
    overrides = _load(tmp_path)
    assert (overrides.apply(_matte(), 3) == 1.0).all()
    assert (overrides.apply(_matte(), 2) == 0.0).all()
    # equal first frames: the narrower (more specific) layer wins
    _png(tmp_path / "000005-000006.png", 128)
    _png(tmp_path / "000005.png", 64)
    assert (_load(tmp_path).apply(_matte(), 5) == np.float32(64 / 255)).all()
    assert (_load(tmp_path).apply(_matte(), 6) == np.float32(128 / 255)).all()


# ---------------------------------------------------------------- errors


def _bad_png_size(d):
    Image.fromarray(np.zeros((H, W + 1), np.uint8), "L").save(d / "000001.png")
    return d / "000001.png", d


def _bad_png_name(d):
    _png(d / "frame_1.png", 0)
    return d / "frame_1.png", d


def _reversed_png_range(d):
    _png(d / "000009-000003.png", 0)
    return d / "000009-000003.png", d


def _truncated_png(d):
    _png(d / "000001.png", 7)
    (d / "000001.png").write_bytes((d / "000001.png").read_bytes()[:-20])
    return d / "000001.png", d


def _json(text):
    def make(d):
        (d / "overrides.json").write_text(text)
        return d / "overrides.json", d / "overrides.json"
    return make


@pytest.mark.parametrize("make, detail", [
    (_bad_png_size, "65x48"),
    (_bad_png_name, "NNNNNN.png"),
    (_reversed_png_range, "reversed"),
    (_truncated_png, "truncated"),
    (_json("[{\"frames\": \"1\","), "not valid JSON"),
    (_json(json.dumps({"frames": "1"})), "list"),
    (_json(json.dumps([_stroke(), _stroke(mode="erase")])), "stroke [1]: unknown mode 'erase'"),
    (_json(json.dumps([_stroke(frames="5-3")])), "stroke [0]: reversed"),
    (_json(json.dumps([_stroke(frames="1..3")])), "stroke [0]: bad frames"),
    (_json(json.dumps([_stroke(size=-4)])), "size"),
    (_json(json.dumps([_stroke(softness=1.5)])), "softness"),
    (_json(json.dumps([{"frames": "1", "mode": "remove"}])), "missing keys size, softness, points"),
    (_json(json.dumps([_stroke(points=[[1, 2, 3]])])), "points"),
], ids=lambda x: x if isinstance(x, str) else getattr(x, "__name__", "json"))
def test_bad_override_files_raise_input_error_naming_the_file(tmp_path, make, detail):
    culprit, arg = make(tmp_path)
    with pytest.raises(InputError) as info:
        _load(arg)
    assert str(culprit) in str(info.value) and detail in str(info.value)
    assert info.value.exit_code == 2


def test_corrupt_png_pixels_raise_input_error_naming_the_file(tmp_path):
    # a valid header and chunk structure but garbage image data: caught when first decoded
    _png(tmp_path / "000001.png", 7)
    data = bytearray((tmp_path / "000001.png").read_bytes())
    idat = data.index(b"IDAT") + 4
    data[idat:idat + 8] = b"\xff" * 8
    (tmp_path / "000001.png").write_bytes(bytes(data))
    overrides = _load(tmp_path)
    with pytest.raises(InputError, match="000001.png"):
        overrides.apply(_matte(), 1)


def test_missing_path_and_non_json_file_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="nope"):
        _load(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("[]")
    with pytest.raises(InputError, match="x.txt"):
        _load(tmp_path / "x.txt")


# ---------------------------------------------------------------- stage


def test_override_stage_applies_per_frame_index(tmp_path):
    path = tmp_path / "strokes.json"
    _write_json(path, [_stroke(frames="11", mode="restore", size=10, softness=0)])
    stage = OverrideStage(_load(path))
    assert stage.name == "overrides" and stage.push(None) == []
    alpha = np.full((3, H, W), 0.5, np.float32)
    batch = FrameBatch(rgb=np.zeros((3, H, W, 3), np.uint8), frame_index=np.array([10, 11, 12], np.int64),
                       pts=None, time_base=Fraction(1, 25), alpha=alpha)
    (out,) = stage.push(batch)
    assert out.alpha[1, 24, 32] == 1.0 and out.alpha[1, 0, 0] == 0.5
    assert (out.alpha[0] == 0.5).all() and (out.alpha[2] == 0.5).all()
    assert (alpha == 0.5).all()  # the upstream array is not written in place

    untouched = FrameBatch(rgb=batch.rgb, frame_index=np.array([0, 1, 2], np.int64), pts=None,
                           time_base=Fraction(1, 25), alpha=alpha)
    assert stage.push(untouched)[0].alpha is alpha


# ---------------------------------------------------------------- limits and hostile files
# Each of these was a finding: a file that made a run take minutes, a traceback, a NaN matte.

from bgvid.stages import overrides as _ov  # noqa: E402 - the limits, by name


def _refusal(path, width=W, height=H) -> str:
    """The InputError message Overrides.load gives for `path` (fails the test when it loads)."""
    with pytest.raises(InputError) as info:
        Overrides.load(path, width=width, height=height)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message and len(message) < 400, message
    assert str(path) in message
    return message


def test_a_png_named_with_a_trailing_newline_is_not_frame_0(tmp_path):
    # "$" matched before a trailing newline: "000000.png\n" was accepted as frame 0.
    _png(tmp_path / "000000.png", 0)
    (tmp_path / "000000.png").rename(tmp_path / "000000.png\n")
    message = _refusal_of_folder(tmp_path)
    assert "000000.png\\n" in message and "not an override file" in message


def _refusal_of_folder(folder) -> str:
    with pytest.raises(InputError) as info:
        _load(folder)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_thousands_of_full_frame_segments_are_refused_before_any_work(tmp_path):
    # One stroke, 20,000 points, size 1e9: each segment's box was the whole frame; 72 s for one
    # 720p frame. Refused at load, naming the file, the stroke and the limit.
    path = tmp_path / "overrides.json"
    points = [[i * 0.05, 100 + i % 7] for i in range(20_000)]
    _write_json(path, [_stroke(), _stroke(size=1e9, points=points)])
    message = _refusal(path, 1280, 720)
    assert "stroke [1]" in message and f"{_ov.WORK_PASSES} passes over 1280x720" in message
    # the same points with a real brush are a real (long) stroke: accepted
    _write_json(path, [_stroke(), _stroke(size=30, points=points)])
    Overrides.load(path, width=1280, height=720)


def test_the_work_budget_is_per_frame_and_names_the_stroke_that_goes_over(tmp_path):
    # 2-point strokes with a brush wider than the frame: each costs two frame areas; the budget is
    # WORK_PASSES frame areas per frame. Spread over frames they are fine; on one frame they are not.
    path = tmp_path / "overrides.json"
    n = _ov.WORK_PASSES // 2 + 5
    spread = [_stroke(frames=str(i), size=3000, points=[[0, 0], [1280, 720]]) for i in range(n)]
    _write_json(path, spread)
    assert len(_ov.Overrides.load(path, width=1280, height=720).frames()) == n
    stacked = [_stroke(frames="100-200", size=3000, points=[[0, 0], [1280, 720]]) for _ in range(n)]
    _write_json(path, [_stroke(frames="0-99", size=3000, points=[[0, 0], [1280, 720]])] * n + stacked)
    message = _refusal(path, 1280, 720)
    over = _ov.WORK_PASSES // 2  # the stroke whose cost, with the ones before it, passes the budget
    assert f"stroke [{over}]:" in message and "with the strokes before it on frame 0" in message


def test_point_and_stroke_counts_have_limits(tmp_path):
    path = tmp_path / "overrides.json"
    _write_json(path, [_stroke(), _stroke(points=[[5, 5]] * (_ov.MAX_POINTS_PER_STROKE + 1))])
    message = _refusal(path)
    assert f"stroke [1]: {_ov.MAX_POINTS_PER_STROKE + 1} points" in message
    assert f"limit of {_ov.MAX_POINTS_PER_STROKE} points in a stroke" in message

    per = _ov.MAX_POINTS_PER_STROKE
    n = _ov.MAX_POINTS // per + 1  # strokes at the per-stroke limit, one too many for the file
    path.write_text(json.dumps([_stroke(frames=str(i), points=[[5, 5]] * per) for i in range(n)]))
    message = _refusal(path)
    assert f"stroke [{n - 1}]" in message and f"limit of {_ov.MAX_POINTS} points in a file" in message

    path.write_text(json.dumps([_stroke(frames=str(i)) for i in range(_ov.MAX_STROKES + 1)]))
    assert f"limit of {_ov.MAX_STROKES} strokes" in _refusal(path)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "overrides.json"
    with open(path, "w") as f:
        f.write("[" + " " * _ov.MAX_JSON_BYTES + "]")
    assert "MiB" in _refusal(path)


def test_a_heavy_but_real_correction_is_within_every_limit(tmp_path):
    # 2,000 strokes of 200 points (pointer events ~1 px apart), brushes of 20-400 px on 1080p,
    # ranges that overlap up to ~50 strokes on a frame: far below every limit.
    rng = np.random.default_rng(1)
    strokes = []
    for _ in range(2000):
        start = rng.uniform([0, 0], [1920, 1080])
        pts = np.round(start + np.cumsum(rng.uniform(-1, 1, (200, 2)), axis=0), 2).tolist()
        a = int(rng.integers(0, 2000))
        strokes.append(_stroke(frames=f"{a}-{a + 50}", size=float(rng.choice([20, 60, 150, 400])), points=pts))
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps(strokes, indent=1))
    assert "2000 strokes" in repr(Overrides.load(path, width=1920, height=1080))


def test_a_brush_wider_than_the_frame_is_clamped_to_its_diagonal_and_never_makes_nan(tmp_path):
    # size 1e300 overflowed float32: the whole matte became NaN.
    path = tmp_path / "overrides.json"
    _write_json(path, [_stroke(size=1e300, softness=0.5, points=[[10, 10]])])
    out = _load(path).apply(_matte(), 0)
    assert np.isfinite(out).all()
    diagonal = float(np.hypot(W, H))
    expected = 0.5 * (1 - rasterize_stroke([[10, 10]], size=diagonal, softness=0.5, width=W, height=H))
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    # radius = half the diagonal (40 px here): soft band from 20 to 40 px, beyond it untouched
    assert out[10, 10] == 0.0 and 0 < out[10, 40] < 0.5 and out[47, 63] == 0.5


@pytest.mark.parametrize("text, detail", [
    ('[{"frames": "1", "mode": "remove", "size": %s, "softness": 0.5, "points": [[1, 1]]}]' % ("9" * 5000),
     "size must be a finite number, got a number of 5000 digits"),
    ('[{"frames": "%s", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]]}]' % ("9" * 5000),
     "out of range"),
    ('[{"frames": "1-%s", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]]}]' % ("9" * 20),
     "out of range"),
    ('[{"frames": %s, "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]]}]' % ("9" * 5000),
     "a number of 5000 digits"),
    ('[{"frames": "1", "mode": "remove", "size": 3, "softness": 0.5, "points": [[%s, 1]]}]' % ("9" * 5000),
     "points[0]"),
    ('[{"frames": "1", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]], "n": %s}]' % ("9" * 5000),
     "key n: a number of 5000 digits"),
    ('[{"frames": "1", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]], "n": 1.%s}]' % ("5" * 5000),
     "key n: a number of 5002 characters"),
    ('[{"frames": "1", "mode": "remove", "size": 1e999, "softness": 0.5, "points": [[1, 1]]}]', "size"),
    ('[{"frames": "1", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]], "note": NaN}]',
     "key note: NaN"),
    ('[{"frames": "1", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]], "x": {"y": [-Infinity]}}]',
     "key x.y[0]: -Infinity"),
    ('[{"frames": "1", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1, 1]], "t": "\\ud800"}]',
     "key t: text that is not valid Unicode"),
    ('[{"frames": "1", "mode": "remove", "size": 3, "softness": 0.5, "points": [[1e300, 1]]}]', "points[0]"),
], ids=["size-digits", "frames-text-digits", "frames-end-digits", "frames-int-digits", "point-digits",
        "extra-int-digits", "extra-float-chars", "size-1e999", "extra-nan", "extra-infinity", "lone-surrogate",
        "far-point"])
def test_numbers_are_checked_before_conversion_and_errors_are_one_line(tmp_path, text, detail):
    # Integers over 4,300 digits raised Python's int-to-str ValueError (a 51-line traceback);
    # NaN in an ignored key was kept, and the editor's page could not parse it back.
    path = tmp_path / "overrides.json"
    path.write_text(text)
    message = _refusal(path)
    assert "stroke [0]" in message and detail in message, message


def test_fuzz_the_json_loader_with_random_and_hostile_documents(tmp_path):
    """No document, however broken, gets anything out of Overrides.load but a result or one
    InputError line naming the file."""
    from _hostile import hostile_documents

    path = tmp_path / "overrides.json"
    accepted = refused = 0
    for data in hostile_documents(seed=20, count=1500, stroke=_stroke()):
        path.write_bytes(data)
        try:
            overrides = Overrides.load(path, width=W, height=H)
        except InputError as exc:
            refused += 1
            message = str(exc)
            assert str(path) in message and "\n" not in message and len(message) < 400, (data[:200], message)
            continue
        accepted += 1
        for frame in sorted(overrides.frames())[:3]:
            assert np.isfinite(overrides.apply(_matte(), frame)).all(), data[:200]
    assert accepted > 50 and refused > 500  # both paths were exercised
