"""Matting measures (bgvid.eval.metrics) on hand-computable cases, and the exact-alpha composite generator
(bgvid.eval.composites). Synthetic inputs except where a test takes the `media` fixture."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from bgvid.eval import composites as _composite
from bgvid.eval import metrics as _metrics

H, W = 48, 64


def _soft_disc(h=H, w=W, cx=30.0, cy=24.0, r=12.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(r - np.hypot(xx - cx, yy - cy), 0, 1).astype(np.float32)  # 1-px soft rim


# ------------------------------------------------------------------------------------- metrics

def test_identical_mattes_score_zero():
    g = _soft_disc()
    for fn in (_metrics.mad, _metrics.mse, _metrics.grad, _metrics.conn):
        assert fn(g, g) == 0.0, fn.__name__
    assert _metrics.dtssd(np.stack([g, g, g]), np.stack([g, g, g])) == 0.0
    assert _metrics.iou(g, g) == 1.0


def test_constant_offset_gives_known_mad_and_mse():
    g = np.random.default_rng(0).uniform(0.2, 0.8, (H, W)).astype(np.float32)
    p = g + np.float32(0.1)
    assert _metrics.mad(p, g) == pytest.approx(100.0, abs=1e-3)  # 0.1 x 1e3
    assert _metrics.mse(p, g) == pytest.approx(10.0, abs=1e-3)  # 0.01 x 1e3


def test_grad_kernels_are_rvm_ones():
    fx, fy = _metrics.gauss_filters(1.4)
    assert fx.shape == (9, 9)  # half size ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) 1.4 0.01))) = 4
    assert np.sum(fx ** 2) == pytest.approx(1.0)
    assert np.allclose(fx, -fx[:, ::-1]) and np.allclose(fx, fx[::-1, :])  # odd in x, even in y
    assert np.array_equal(fy, fx.T)


def test_grad_sees_a_shifted_edge_and_follows_rvm_normalisation():
    g = np.zeros((H, W), np.float32)
    g[:, 30:] = 1
    p = np.roll(g, 2, axis=1)
    assert _metrics.grad(p, g) > 0
    assert _metrics.grad(p, g) == pytest.approx(_metrics.grad(g, p))
    # evaluate_lr.py stretches each matte to 0..1 first: half as strong an edge is "no error" there,
    # while evaluate_hr.py (normalize=False) counts it
    assert _metrics.grad(0.5 * g, g) == pytest.approx(0.0, abs=1e-9)
    assert _metrics.grad(0.5 * g, g, normalize=False) > 0


def test_conn_counts_alpha_detached_from_the_object():
    g = np.zeros((H, W), np.float32)
    g[5:25, 5:25] = 1
    p = g.copy()
    p[30:40, 40:50] = 1.0  # a 10x10 opaque blob away from the object
    # the blob is never in the largest component, so its level is 0: phi = 1 - 1 = 0 against 1 in the
    # truth, 100 pixels x 1 / 1e3
    assert _metrics.conn(p, g) == pytest.approx(0.1)
    p[30:40, 40:50] = 0.1  # below the 0.15 floor: not counted
    assert _metrics.conn(p, g) == 0.0


def test_dtssd_is_zero_for_a_steady_error_and_measures_flicker():
    rng = np.random.default_rng(1)
    g = rng.uniform(0.2, 0.8, (5, H, W)).astype(np.float32)
    steady = g + rng.uniform(-0.1, 0.1, (H, W)).astype(np.float32)  # same error in every frame
    assert _metrics.dtssd(steady, g) == pytest.approx(0.0, abs=1e-4)
    sign = np.array([1, -1, 1, -1, 1], np.float32)[:, None, None]
    flicker = g + 0.1 * sign  # the error jumps by 0.2 everywhere between frames: sqrt(0.04) x 1e2
    assert _metrics.dtssd(flicker, g) == pytest.approx(20.0, abs=1e-3)
    assert _metrics.dtssd(g[:1], g[:1]) == 0.0


def test_iou_of_known_masks():
    g = np.zeros((H, W), np.float32)
    p = np.zeros((H, W), np.float32)
    g[10:20, 10:20] = 1
    p[10:20, 15:25] = 1  # half overlaps: 50 / 150
    assert _metrics.iou(p, g) == pytest.approx(1 / 3)
    assert _metrics.iou(p * 0.5, g) == 0.0  # 0.5 is not above the threshold
    assert _metrics.iou(p * 0.5, g, threshold=0.4) == pytest.approx(1 / 3)
    assert _metrics.iou(np.zeros_like(g), np.zeros_like(g)) == 1.0


def test_score_sequence_averages_frames_and_pairs():
    rng = np.random.default_rng(2)
    true = [_soft_disc(cx=20 + 3 * t) for t in range(4)]
    pred = [np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1).astype(np.float32) for t in true]
    s = _metrics.score_sequence(iter(pred), iter(true))
    assert s["frames"] == 4
    for name in ("mad", "mse", "grad", "conn", "iou"):
        fn = getattr(_metrics, name)
        assert s[name] == pytest.approx(np.mean([fn(p, t) for p, t in zip(pred, true, strict=False)])), name
    assert s["dtssd"] == pytest.approx(_metrics.dtssd(np.stack(pred), np.stack(true)))
    with pytest.raises(ValueError):
        _metrics.score_sequence(pred, true[:3])


# ----------------------------------------------------------------------------------- composite

def _fg(h=40, w=30) -> np.ndarray:
    """RGBA uint8: a soft disc whose colour under alpha 0 is garish, to catch unpremultiplied warps."""
    rgba = np.zeros((h, w, 4), np.uint8)  # blue 0 inside
    yy, xx = np.mgrid[0:h, 0:w]
    rgba[..., 0] = np.uint8(40) + (xx * 5).astype(np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = np.round(255 * np.clip(13 - np.hypot(xx - w / 2, yy - h / 2), 0, 1))
    inside = rgba[..., 3] > 0
    rgba[~inside, :3] = (255, 0, 255)
    return rgba


def _plate(value=None) -> np.ndarray:
    if value is not None:
        return np.full((60, 90, 3), value, np.uint8)
    return np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)


def test_composite_is_alpha_blend_of_what_it_returns():
    kw = dict(frames=4, size=(H, W), seed=5, motion="pan")
    bgs = list(_composite.background_frames(_plate(), **kw))
    for (frame, alpha, fg), bg in zip(_composite.make_composite(_fg(), _plate(), **kw), bgs, strict=False):
        assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
        assert alpha.dtype == np.float32 and fg.dtype == np.float32
        a = alpha.astype(np.float64)[..., None]
        exact = 255 * (a * fg + (1 - a) * bg)
        assert np.abs(frame - exact).max() <= 0.5 + 1e-6  # rounded once, nowhere else
        assert 0 < alpha.max() <= 1 and ((alpha > 0) & (alpha < 1)).any()
        # premultiplied warp: no magenta from under alpha 0 leaks into the edge colours
        assert fg[..., 2][alpha > 0].max() < 0.01


def test_composite_alpha_is_the_alpha_used():
    # triangulation: over black and over white, frame_white - frame_black = 255 * (1 - a)
    kw = dict(frames=3, size=(H, W), seed=1, motion="zoom")
    black = list(_composite.make_composite(_fg(), _plate(0), **kw))
    white = list(_composite.make_composite(_fg(), _plate(255), **kw))
    for (fb, ab, _), (fw, aw, _) in zip(black, white, strict=False):
        assert np.array_equal(ab, aw)
        recovered = 1 - (fw.astype(np.float64) - fb) / 255
        assert np.abs(recovered - ab[..., None]).max() <= 1 / 255 + 1e-6


def test_foreground_moves_smoothly():
    out = list(_composite.make_composite(_fg(), _plate(), frames=6, size=(H, W), seed=0, motion="pan"))
    xs = []
    for _, alpha, _ in out:
        m = cv2.moments(alpha)
        xs.append(m["m10"] / m["m00"])
    steps = np.diff(xs)
    assert np.all(np.abs(steps) > 0.05)  # moves in every frame...
    assert np.all(np.sign(steps) == np.sign(steps[0]))  # ...one way...
    assert np.abs(steps).max() < 10  # ...without jumps
    static = list(_composite.make_composite(_fg(), _plate(), frames=3, size=(H, W), motion="static"))
    assert np.array_equal(static[0][0], static[2][0])


@pytest.mark.parametrize("target", ["frames", "clip.mp4"])
def test_written_composite_reads_back_exactly(tmp_path, target):
    kw = dict(frames=3, size=(H, W), seed=2, motion="pan")
    expected = list(_composite.make_composite(_fg(), _plate(), **kw))
    out, alpha_dir = tmp_path / target, tmp_path / "alpha"
    assert _composite.write_composite(out, alpha_dir, _fg(), _plate(), **kw) == 3

    names = sorted(p.name for p in alpha_dir.iterdir())
    assert names == ["000000.png", "000001.png", "000002.png"]
    for name, (_, alpha, _) in zip(names, expected, strict=False):
        raw = cv2.imread(str(alpha_dir / name), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.ndim == 2
        assert np.array_equal(_composite.read_alpha(alpha_dir / name), alpha)  # bit-exact float32

    if out.suffix == ".mp4":
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    else:
        frames = [cv2.imread(str(out / n))[..., ::-1] for n in names]
    assert len(frames) == 3
    for got, (want, _, _) in zip(frames, expected, strict=False):
        assert np.array_equal(got, want)  # lossless: RGB H.264 at crf 0, or PNG

    with pytest.raises(FileExistsError):
        _composite.write_composite(out, alpha_dir, _fg(), _plate(), **kw)
    assert _composite.write_composite(out, alpha_dir, _fg(), _plate(), **{**kw, "frames": 2},
                                      overwrite=True) == 2
    assert len(list(alpha_dir.iterdir())) == 2  # no stale frame 000002.png left to be scored


def test_real_foreground_over_real_backgrounds(media):
    lemur = media / "rgba" / "lemur_rgba.png"
    for background, frames in ((media / "backgrounds" / "still_GT26r.jpg", 4),
                               (media / "backgrounds" / "handheld_room.mp4", 40)):  # 36 frames: plays back
        out = list(_composite.make_composite(lemur, background, frames=frames, size=(72, 128), motion="zoom"))
        assert len(out) == frames
        frame, alpha, fg = out[-1]
        assert frame.shape == (72, 128, 3) and alpha.shape == (72, 128)
        assert ((alpha > 0.05) & (alpha < 0.95)).mean() > 0.01  # fur: real soft alpha
        assert not np.array_equal(out[0][0], out[-1][0])
    # a grounded foreground keeps its cut edge below the frame: the bottom row is mostly opaque
    assert (alpha[-1] > 0.5).any()
