"""Segmenter on real images and DAVIS frames: mattes where the person is, faithful to the plain
pipeline, users' own models with a spec."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from _reference import plain_pipeline

from bgvid import Segmenter
from bgvid.errors import InputError, ModelError
from bgvid.models.catalog import get_model

# Regions of portrait_grace_hopper.jpg (600x512): (rows, cols)
FACE = (slice(150, 250), slice(200, 320))
SHOULDERS = (slice(500, 600), slice(150, 350))
BACKDROP = [(slice(0, 100), slice(0, 80)), (slice(0, 150), slice(430, 512))]


@pytest.fixture
def portrait(media) -> np.ndarray:
    bgr = cv2.imread(str(media / "backgrounds" / "portrait_grace_hopper.jpg"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _segmenter(model_path, name, **kw) -> Segmenter:
    return Segmenter(model_path(name), get_model(name), threads=2, **kw)


def _assert_person(alpha: np.ndarray) -> None:
    assert alpha.dtype == np.float32 and alpha.shape == (600, 512)
    assert alpha[FACE].mean() > 0.95 and alpha[SHOULDERS].mean() > 0.95
    for region in BACKDROP:
        assert alpha[region].mean() < 0.05


@pytest.mark.parametrize("name", ["selfie", "selfie-landscape"])
def test_selfie_models_find_the_person(model_path, portrait, name):
    _assert_person(_segmenter(model_path, name)(portrait[None])[0])


def test_alpha_is_continuous_not_thresholded(model_path, portrait):
    alpha = _segmenter(model_path, "selfie")(portrait[None])[0]
    soft = (alpha > 0.05) & (alpha < 0.95)
    assert soft.sum() > 500  # soft edges survive (hair, shoulders)


def test_model_resolution_and_batches(model_path, portrait):
    seg = _segmenter(model_path, "selfie-landscape")
    frames = np.stack([portrait, portrait[:, ::-1], np.zeros_like(portrait)])
    low = seg(frames, size="model")
    assert low.shape == (3, 144, 256)
    one_by_one = np.concatenate([seg(frames[i:i + 1], size="model") for i in range(3)])
    np.testing.assert_allclose(low, one_by_one, atol=1e-5)
    assert low[2].max() < 0.05  # a black frame holds nobody


def test_16bit_frames_give_the_same_matte(model_path, portrait):
    seg = _segmenter(model_path, "selfie")
    deep = portrait.astype(np.uint16) * 257
    diff = np.abs(seg(deep[None]) - seg(portrait[None]))
    # 8-bit frames are rounded once more after resizing; steep edges amplify that a little.
    assert diff.mean() < 2e-3 and np.quantile(diff, 0.99) < 0.02


def test_bad_frame_shape_is_a_clear_error(model_path):
    with pytest.raises(InputError, match=r"\[N,H,W,3\]"):
        _segmenter(model_path, "selfie")(np.zeros((4, 4, 3), np.uint8))


def test_fixed_size_models_refuse_other_sizes(model_path):
    with pytest.raises(InputError, match="runs only at 256x256"):
        _segmenter(model_path, "selfie", input_size=(512, 512))


def test_users_own_onnx_with_a_spec_beside_it(model_path, portrait, tmp_path):
    own = tmp_path / "mine.onnx"
    shutil.copy(model_path("selfie"), own)
    own.with_suffix(".toml").write_text(
        '[input]\nname = "input"\nlayout = "NHWC"\nsize = [256, 256]\nmean = 0.0\nstd = 255.0\n'
        '[output]\nname = "output"\nkind = "probability"\n')
    seg = Segmenter.from_name(str(own))
    np.testing.assert_allclose(seg(portrait[None]), _segmenter(model_path, "selfie")(portrait[None]), atol=1e-5)


@pytest.mark.parametrize("toml, message", [
    ('[input]\nname = "image"\nlayout = "NHWC"\nsize = [256, 256]\n', "spec names input 'image'"),
    ('[input]\nname = "input"\nlayout = "NCHW"\nsize = [256, 256]\n', "does not match layout NCHW"),
    ('[input]\nname = "input"\nlayout = "NHWC"\nsize = [256, 256]\n[output]\nname = "mask"\n',
     "spec names output 'mask'"),
    ('[input]\nname = "input"\nlayout = "HWC"\nsize = [256, 256]\n', "layout must be one of NCHW, NHWC"),
])
def test_spec_that_does_not_match_the_graph_is_named(model_path, tmp_path, toml, message):
    own = tmp_path / "mine.onnx"
    shutil.copy(model_path("selfie"), own)
    own.with_suffix(".toml").write_text(toml)
    with pytest.raises((ModelError, InputError), match=message):
        Segmenter.from_name(str(own))


def test_own_model_without_a_spec_says_how_to_write_one(model_path, tmp_path):
    own = tmp_path / "mine.onnx"
    shutil.copy(model_path("selfie"), own)
    with pytest.raises(InputError, match="mine.toml"):
        Segmenter.from_name(str(own))


def test_isnet_small_runs_one_frame_at_a_time(model_path):
    assert _segmenter(model_path, "isnet-small", input_size=(256, 256)).max_batch == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["isnet", "isnet-small"])
def test_isnet_finds_the_person(model_path, portrait, name):
    _assert_person(_segmenter(model_path, name)(portrait[None])[0])


def _davis_iou(seg: Segmenter, clip: Path, step: int) -> tuple[float, float]:
    frames = sorted((clip / "frames").glob("*.jpg"))[::step]
    masks = sorted((clip / "masks").glob("*.png"))[::step]
    ours, plain = [], []
    for f, m in zip(frames, masks, strict=False):
        rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)[None]
        gt = cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) > 127
        for alpha, out in ((seg(rgb)[0], ours), (plain_pipeline(seg, rgb)[0], plain)):
            pred = alpha > 0.5
            out.append((pred & gt).sum() / max(1, (pred | gt).sum()))
    return float(np.mean(ours)), float(np.mean(plain))


@pytest.mark.parametrize("clip", ["dance-jump", "swing"])
@pytest.mark.parametrize("name", ["selfie", pytest.param("isnet", marks=pytest.mark.slow)])
def test_davis_iou_is_faithful_to_the_plain_pipeline(model_path, media, name, clip):
    seg = _segmenter(model_path, name)
    ours, plain = _davis_iou(seg, media / "davis" / clip, step=1 if name == "selfie" else 6)
    assert ours >= plain - 0.02, (ours, plain)
    assert ours > 0.3  # the person is found at all (isnet also keeps dance-jump's statues and bystanders)
