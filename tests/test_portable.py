"""The portable kernel bodies (the code a GPU runs, here through NumPy + scipy.ndimage) against the CPU
product's OpenCV/numba bodies, within stated tolerances, on real frames."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from _clips import make_clip

from bgvid.kernels import (
    NUMPY,
    blur_frames,
    choke_feather,
    composite,
    decontaminate,
    guided_upsample,
    resize_batch,
    smooth_mattes,
)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Four real 640x360 frames where ../shared/media is present (juggle), else a synthetic clip; and a
    soft moving low-resolution matte."""
    from conftest import SHARED_MEDIA

    clip = SHARED_MEDIA / "clips" / "juggle.mp4"
    if not clip.is_file():
        clip = make_clip(tmp_path_factory.mktemp("p") / "c.mp4", width=640, height=360, frames=4)
    with av.open(str(clip)) as c:
        rgb = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(4), c.decode(video=0), strict=False)])
    rgb = np.ascontiguousarray(rgb[:, :360, :640])
    yy, xx = np.mgrid[0:64, 0:64]
    low = np.stack([np.clip(1.2 - np.hypot(yy - 32 - 2 * i, xx - 30) / 18, 0, 1) for i in range(4)])
    return rgb, low.astype(np.float32)


def _within(a, b, atol, share=1.0):
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    assert (d <= atol).mean() >= share, f"max {d.max():.3g}; {(d <= atol).mean():.5f} within {atol}"


@pytest.mark.parametrize("mode", ["bilinear", "area"])
@pytest.mark.parametrize("size", [(100, 170), (250, 500), (720, 1280)])
def test_resize_matches_opencv(frames, mode, size):
    rgb, low = frames
    if mode == "area" and size[0] > rgb.shape[1]:
        size = (size[0], size[1])  # area when enlarging: OpenCV's own two-tap rule, reproduced too
    as_float = rgb.astype(np.float32)
    _within(resize_batch(as_float, size, interpolation=mode, backend=NUMPY),
            resize_batch(as_float, size, interpolation=mode), atol=1e-3)
    _within(resize_batch(rgb, size, interpolation=mode, backend=NUMPY),
            resize_batch(rgb, size, interpolation=mode), atol=1)  # 8-bit: OpenCV's fixed point vs rounding
    _within(resize_batch(low, size, interpolation=mode, backend=NUMPY), resize_batch(low, size, interpolation=mode),
            atol=1e-6)


@pytest.mark.parametrize("src, dst", [(144, 640), (176, 1152), (144, 200), (97, 1283)])
def test_area_enlarging_weights_are_opencvs(src, dst):
    """Enlarging with INTER_AREA (a 176x144 clip's grey frames brought to the object model's 1152x640 for the
    flow): the portable weights pick OpenCV's source pixel also where d * src / dst is a whole number in
    exact arithmetic but not in OpenCV's (1 / (dst / src)) * d, and drop a weight OpenCV's float cast makes
    0. One wrong pick was a whole pixel off: grey values 95-249 apart and the flow with them."""
    import cv2

    impulses = np.eye(src, dtype=np.float32)
    opencv = cv2.resize(impulses, (src, dst), interpolation=cv2.INTER_AREA)  # row d: the weights of output d
    ours = np.asarray(NUMPY._weights(src, dst, "area"))
    assert np.abs(opencv - ours).max() <= 1e-6


def test_composite_blur_and_choke_feather_match_opencv(frames):
    rgb, low = frames
    alpha = resize_batch(low, rgb.shape[1:3], interpolation="bilinear")
    plate = np.array([20.0, 128.0, 255.0])
    _within(composite(rgb, alpha, plate, backend=NUMPY), composite(rgb, alpha, plate), atol=1)
    _within(blur_frames(rgb, backend=NUMPY), blur_frames(rgb), atol=2, share=0.999)
    _within(choke_feather(alpha, choke=3, feather=4, backend=NUMPY), choke_feather(alpha, choke=3, feather=4),
            atol=1e-5)
    _within(choke_feather(alpha, choke=-2, backend=NUMPY), choke_feather(alpha, choke=-2), atol=0)


def test_morphology_disc_is_opencvs_ellipse():
    for r in range(1, 16):
        ref = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(bool)
        assert (NUMPY._footprint(np.zeros((1, 4, 4)), r)[0] == ref).all(), r


def test_guided_upsample_matches_the_band_limited_cpu_body(frames):
    rgb, low = frames
    # all but a few pixels right at the band's threshold (1e-7 apart, on different sides of it)
    _within(guided_upsample(low, rgb, backend=NUMPY), guided_upsample(low, rgb), atol=1 / 1023, share=0.9995)


def test_smoothing_matches_across_batches_with_motion(frames):
    rgb, low = frames
    a, state_a = smooth_mattes(low[:2], rgb[:2], None, backend=NUMPY)
    b, state_b = smooth_mattes(low[:2], rgb[:2], None)
    _within(a, b, atol=1e-6)
    a, _ = smooth_mattes(low[2:], rgb[2:], state_a, backend=NUMPY)  # a second batch continues the state
    b, _ = smooth_mattes(low[2:], rgb[2:], state_b)
    _within(a, b, atol=1e-4)


def test_decontamination_matches_the_cpu_on_soft_pixels(frames):
    rgb, low = frames
    alpha = resize_batch(low, rgb.shape[1:3], interpolation="bilinear")
    soft = (alpha > 0.02) & (alpha < 0.98)
    portable, cpu = decontaminate(rgb, alpha, backend=NUMPY), decontaminate(rgb, alpha)
    assert soft.sum() > 1000
    _within(portable[soft], cpu[soft], atol=2, share=0.999)
    assert (portable[alpha >= 1] == rgb[alpha >= 1]).all()  # opaque pixels keep their colour exactly


@pytest.mark.parametrize("fmt,matrix", [("yuva444p10le", 1), ("yuva420p", 1), ("yuv420p", 5), ("yuva444p10le", 6)])
def test_encoder_planes_match_swscale_on_even_sizes(frames, fmt, matrix):
    from bgvid.io.reader import sws_colorspace
    from bgvid.kernels._planes import PlaneSpec, to_planes

    rgb, _ = frames
    planes = to_planes(rgb[:1], None, PlaneSpec(fmt, matrix=matrix), backend=NUMPY)
    ref = av.VideoFrame.from_ndarray(rgb[0], format="rgb24").reformat(
        format=fmt, dst_colorspace=sws_colorspace(matrix), dst_color_range=1)
    dtype = np.uint16 if fmt.endswith("10le") else np.uint8
    for k in range(len(planes.shapes)):
        p = ref.planes[k]
        expect = np.frombuffer(p, dtype).reshape(p.height, -1)[:, :p.width]
        if k == 3:
            expect = np.full_like(expect, 1023 if dtype == np.uint16 else 255)  # opaque
        _within(planes.plane(0, k), expect, atol=1)


def test_grey_guide_reproduces_opencvs_8bit_rgb2gray(frames):
    from bgvid.kernels._smooth import _grey, _grey_portable

    rgb, _ = frames
    size = (90, 160)
    _within(_grey_portable(NUMPY, rgb, size), np.stack(_grey(rgb, size)), atol=1e-3)
