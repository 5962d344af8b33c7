"""Matte quality features: temporal smoothing with explicit state, chunked runs that join a full run,
refinement choices."""

from __future__ import annotations

import numpy as np
import pytest
from test_run import bgvid_cli

import bgvid
from bgvid.errors import InputError
from bgvid.io.reader import read_rgba
from bgvid.kernels import SmoothState, smooth_mattes, warmup_frames


def test_warmup_bound_follows_the_strength():
    assert warmup_frames(0.5) == 8  # 0.5**8 = 1/256 < 1/255
    assert warmup_frames(0.7) == 16  # the default strength
    for strength in (0.5, 0.7, 0.9):
        assert strength ** warmup_frames(strength) <= 1 / 255 < strength ** (warmup_frames(strength) - 1)
    assert warmup_frames(0.0) == 0


def _moving_square(frames: int, step: int, size: int = 128):
    """A textured square gliding right by `step` px per frame over a textured, panning background:
    frames and their exact alpha. Textures are softened (sigma 1 px) as a camera would."""
    import cv2

    rng = np.random.default_rng(3)
    background = cv2.GaussianBlur(rng.integers(0, 120, (size, size * 2, 3), dtype=np.uint8), (0, 0), 1)
    texture = cv2.GaussianBlur(rng.integers(130, 255, (40, 40, 3), dtype=np.uint8), (0, 0), 1)
    rgb = np.empty((frames, size, size, 3), np.uint8)
    alpha = np.zeros((frames, size, size), np.float32)
    for t in range(frames):
        x = 10 + step * t
        rgb[t] = background[:, t * 2:t * 2 + size]  # the background pans too
        rgb[t, 28:68, x:x + 40] = texture
        alpha[t, 28:68, x:x + 40] = 1.0
    return rgb, alpha


def test_smoothing_steadies_the_edges_of_a_moving_object():
    """Flicker on a moving edge (where it shows) is cut, and the matte moves with the object: the
    smoother carries its state along the picture's motion instead of giving up where things move."""
    rgb, truth = _moving_square(12, step=3)
    rng = np.random.default_rng(4)
    edge = np.abs(np.diff(truth, axis=2, prepend=0)) + np.abs(np.diff(truth, axis=1, prepend=0)) > 0
    import cv2
    band = np.stack([cv2.dilate(e.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for e in edge])
    noisy = np.clip(truth + band * rng.normal(0, 0.25, truth.shape), 0, 1).astype(np.float32)
    out, _ = smooth_mattes(noisy, rgb, None)
    flicker_in = np.diff(noisy - truth, axis=0)[band[1:]].std()
    flicker_out = np.diff(out - truth, axis=0)[band[1:]].std()
    assert flicker_out < 0.8 * flicker_in, (flicker_in, flicker_out)  # 0.73 measured
    # no trail: inside the square's newest position the matte is already solid, behind it already clear
    assert out[-1, 32:64, 10 + 3 * 11 + 4:10 + 3 * 11 + 36].min() > 0.9
    assert out[-1, 32:64, 10:10 + 3 * 11 - 4].max() < 0.1


def test_smoothing_steadies_a_still_picture_and_follows_motion():
    rng = np.random.default_rng(0)
    still = np.full((6, 32, 32, 3), 120, np.uint8)
    noisy = np.clip(0.5 + rng.normal(0, 0.1, (6, 32, 32)), 0, 1).astype(np.float32)  # flicker, nothing moves
    out, state = smooth_mattes(noisy, still, None, strength=0.5)
    assert np.std(np.diff(out, axis=0)) < 0.6 * np.std(np.diff(noisy, axis=0))
    assert isinstance(state, SmoothState)
    moving = still.copy()
    moving[1:, :, 16:] = 250  # the picture changes on the right half...
    step = np.zeros((6, 32, 32), np.float32)
    step[1:, :, 16:] = 1.0  # ...and so does the matte: follow at once, no trail
    out, _ = smooth_mattes(step, moving, None, strength=0.5)
    assert out[1, :, 20:].min() > 0.99


def test_guided_refinement_finds_an_edge_between_equal_brightness_colours():
    """A blocky low-resolution matte over red | green halves of equal luma: the colour guide puts the
    edge on the colour boundary (a luma guide cannot see it)."""
    from bgvid.kernels import guided_upsample, resize_batch

    rgb = np.zeros((1, 128, 128, 3), np.uint8)
    rgb[0, :, :61] = (200, 60, 110)
    rgb[0, :, 61:] = (60, 107, 160)  # BT.709 luma within 1 level of the left half
    truth = np.zeros((128, 128), np.float32)
    truth[:, :61] = 1.0
    low = resize_batch(truth[None], (16, 16), interpolation="area")  # what a 16-px model would see
    plain = resize_batch(low, (128, 128), interpolation="bilinear")[0]
    refined = guided_upsample(low, rgb)[0]
    # A guided filter cannot remove the model's blur away from the edge (one colour per window), but
    # it puts a step exactly on the colour boundary, where bilinear has a gentle ramp.
    assert (refined[:, 60] - refined[:, 61]).min() > 0.4
    assert (plain[:, 60] - plain[:, 61]).max() < 0.1
    assert np.abs(refined - truth).mean() < np.abs(plain - truth).mean()


def test_state_carries_across_batches():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    alpha = rng.random((8, 16, 16), dtype=np.float32)
    whole, _ = smooth_mattes(alpha, frames, None)
    first, state = smooth_mattes(alpha[:3], frames[:3], None)
    rest, _ = smooth_mattes(alpha[3:], frames[3:], state)
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)


def test_chunk_joins_a_full_run_within_1_over_255(model_path, media):
    """The render-farm contract on real footage: frames 60-89 alone equal the same frames of a full
    run within 1/255, thanks to the smoother's pre-roll."""
    model_path("selfie")
    src = media / "clips" / "carphone.mp4"
    full = {i: a for i, _, _, a in bgvid.iter_mattes(src, model="selfie")}
    chunk = {i: a for i, _, _, a in bgvid.iter_mattes(src, model="selfie", frames="60-89")}
    assert sorted(chunk) == list(range(60, 90))
    worst = max(np.abs(chunk[i] - full[i]).max() for i in chunk)
    assert worst <= 1 / 255, worst
    naive = {i: a for i, _, _, a in bgvid.iter_mattes(src, model="selfie", frames="60-89", smooth=None)}
    assert max(np.abs(naive[i] - full[i]).max() for i in naive) > 1 / 255  # smoothing did something


def test_chunked_cli_output_joins_the_full_output(model_path, media, tmp_path):
    model_path("selfie")
    src = media / "clips" / "carphone.mp4"
    bgvid_cli("run", src, "-o", tmp_path / "full.mov", "--model", "selfie", "--quiet", check=0)
    bgvid_cli("run", src, "-o", tmp_path / "part.mov", "--model", "selfie", "--frames", "100-119", "--quiet", check=0)
    full = [rgba[..., 3] for _, _, rgba in read_rgba(tmp_path / "full.mov")][100:120]
    part = [rgba[..., 3] for _, _, rgba in read_rgba(tmp_path / "part.mov")]
    assert len(part) == len(full) == 20
    worst = max(np.abs(p.astype(np.int64) - f.astype(np.int64)).max() for p, f in zip(part, full, strict=True)) / 65535
    assert worst <= 1 / 255 + 1 / 1023  # + one 10-bit step of ProRes alpha quantisation


@pytest.mark.parametrize("refine", ["none", "guided"])
def test_refinements_find_the_person(model_path, media, refine):
    model_path("selfie")
    mattes = [a for _, _, _, a in bgvid.iter_mattes(media / "clips" / "carphone.mp4", model="selfie",
                                                   frames="0-7", refine=refine)]
    assert len(mattes) == 8
    centre = np.stack(mattes)[:, 60:110, 70:120]  # the man's face and chest
    assert centre.mean() > 0.8


def test_guided_refinement_snaps_the_edge_to_the_picture(model_path, media):
    """DAVIS 'swing' at 854x480: the model sees 256x256, so its matte really is upsampled. The guided
    filter must put the matte's edges on the picture's edges (the image gradient under the matte's
    gradient rises; measured +14% here, +11% on dance-jump) and match the hand-drawn masks better
    than bilinear upsampling does, not merely differ from it."""
    import cv2

    model_path("selfie")
    clip = media / "davis" / "swing"
    masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted((clip / "masks").glob("*.png"))[:8]]
    runs = {refine: list(bgvid.iter_mattes(clip / "frames", model="selfie", frames="0-7", refine=refine))
            for refine in ("none", "guided")}

    def gradient(x):
        return np.hypot(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))

    def edge_strength(refine):  # image gradient, averaged with the matte's gradient as weight
        out = []
        for _, _, rgb, alpha in runs[refine]:
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
            weight = gradient(alpha.astype(np.float32))
            out.append(float((weight * gradient(grey)).sum() / weight.sum()))
        return np.mean(out)

    def iou(refine):
        return np.mean([((a > 0.5) & m).sum() / ((a > 0.5) | m).sum()
                        for (_, _, _, a), m in zip(runs[refine], masks, strict=True)])

    assert len(masks) == len(runs["none"]) == len(runs["guided"]) == 8
    assert edge_strength("guided") > 1.05 * edge_strength("none")
    assert iou("guided") > iou("none")


def test_bad_quality_options_are_named(tmp_path):
    with pytest.raises(InputError, match="--refine must be one of none, guided"):
        bgvid.remove_background(tmp_path / "x.mp4", refine="sharp")
    proc = bgvid_cli("run", tmp_path / "x.mp4", "--smooth", "1.5")
    assert proc.returncode == 2 and "[0, 1)" in proc.stderr


def test_eval_scores_a_perfect_and_a_real_output(model_path, media, tmp_path):
    import json

    import cv2

    from bgvid.eval.composites import write_composite

    model_path("selfie")
    clip, truth = tmp_path / "comp.mp4", tmp_path / "truth"
    n = write_composite(clip, truth, media / "rgba" / "plush_rgba.png", media / "backgrounds" / "still_GT26r.jpg",
                        frames=6, size=(144, 256))
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    for i, f in enumerate(sorted(truth.iterdir())):
        alpha = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(perfect / f"{i:06d}.png"), np.dstack([alpha] * 4))
    scores = json.loads(bgvid_cli("eval", perfect, "--truth", truth, "--json", check=0).stdout)
    assert scores["frames"] == n and scores["mad"] == 0 and scores["iou"] == 1.0
    bgvid_cli("run", clip, "-o", tmp_path / "out.mov", "--model", "selfie", "--quiet", check=0)
    real = json.loads(bgvid_cli("eval", tmp_path / "out.mov", "--truth", truth, "--json", check=0).stdout)
    assert real["frames"] == n and 0 < real["mad"] < 1000 and real["dtssd"] >= 0
    table = bgvid_cli("eval", tmp_path / "out.mov", "--truth", truth, check=0).stdout
    assert "MAD" in table and "dtSSD" in table


def test_overrides_give_the_target_alpha_end_to_end(model_path, media, tmp_path):
    """A remove stroke on the man's face (frames 3-5) and a restore PNG over the top-left corner
    (frames 0-2) of real footage: the output holds exactly the targets there, and only there."""
    import json

    import cv2

    model_path("rvm"), model_path("isnet")  # the default (--subject auto) probes with both
    src = media / "clips" / "carphone.mp4"  # 176x144
    folder = tmp_path / "fix"
    folder.mkdir()
    (folder / "overrides.json").write_text(json.dumps(
        [{"frames": "3-5", "mode": "remove", "size": 40, "softness": 0.25, "points": [[85, 80], [100, 85]]}]))
    restore = np.zeros((144, 176, 2), np.uint8)  # grey + alpha
    restore[:30, :40] = (255, 255)
    cv2.imwrite(str(folder / "000000-000002.png"), np.dstack([restore[..., 0]] * 3 + [restore[..., 1]]))
    out = tmp_path / "out"
    bgvid_cli("run", src, "-o", out, "--frames", "0-7", "--overrides", folder, "--quiet", check=0)
    alpha = {i: rgba[..., 3] / 65535 for i, _, rgba in read_rgba(out)}
    assert sorted(alpha) == list(range(8))
    for i in (3, 4, 5):
        assert alpha[i][75:90, 85:100].max() == 0.0  # hard core of the brush: exactly removed
    assert alpha[6][75:90, 85:100].mean() > 0.8  # the next frame is the model's again
    for i in (0, 1, 2):
        assert alpha[i][:30, :40].min() == 1.0
    assert alpha[3][:30, :40].max() < 0.5


def test_override_errors_name_the_file(tmp_path, media):
    bad = tmp_path / "overrides.json"
    bad.write_text('[{"frames": "3-5", "mode": "erase", "size": 10, "softness": 0, "points": [[1, 1]]}]')
    proc = bgvid_cli("run", media / "clips" / "carphone.mp4", "-o", tmp_path / "o.mov", "--overrides", bad)
    assert proc.returncode == 2 and "overrides.json" in proc.stderr and "erase" in proc.stderr
    assert not (tmp_path / "o.mov").exists()


def test_recurrent_chunk_is_close_to_a_full_run(model_path, media):
    """rvm's state does not converge exactly; 32 frames of pre-roll keep the seam small (measured:
    mean difference about 1e-4..6e-4, without pre-roll about 2e-3)."""
    model_path("rvm")
    src = media / "clips" / "carphone.mp4"
    full = {i: a for i, _, _, a in bgvid.iter_mattes(src, model="rvm", frames="0-59")}
    chunk = {i: a for i, _, _, a in bgvid.iter_mattes(src, model="rvm", frames="40-59")}
    assert sorted(chunk) == list(range(40, 60))
    diffs = np.stack([np.abs(chunk[i] - full[i]) for i in chunk])
    assert diffs.mean() < 1e-3


def test_rvm_carries_foreground_colour_and_state(model_path, media):
    from bgvid import Segmenter
    from bgvid.io.reader import VideoReader
    from bgvid.models.catalog import get_model

    seg = Segmenter(model_path("rvm"), get_model("rvm"), threads=2)
    with VideoReader(media / "clips" / "carphone.mp4", frames=(0, 3), batch_size=4) as reader:
        frames = next(iter(reader)).rgb
    alpha, foreground, state = seg.segment(frames, None, with_foreground=True)
    assert alpha.shape == (4, 144, 176) and foreground.shape == (4, 144, 176, 3)
    assert alpha[:, 60:110, 70:120].mean() > 0.8  # the man
    again, _ = seg.segment(frames[1:2], seg.segment(frames[:1], None)[1])
    np.testing.assert_allclose(again[0], alpha[1], atol=1e-5)  # state carried = one continuous run


def test_choke_and_feather_move_and_soften_the_edge():
    from bgvid.kernels import choke_feather

    alpha = np.zeros((1, 40, 40), np.float32)
    alpha[:, 10:30, 10:30] = 1.0
    choked = choke_feather(alpha, choke=3)
    assert choked[0, 13:27, 13:27].min() == 1.0 and choked[0, 11, 20] == 0.0
    grown = choke_feather(alpha, choke=-3)
    assert grown[0, 8, 20] == 1.0
    soft = choke_feather(alpha, feather=4)
    assert 0.3 < soft[0, 10, 20] < 0.7 and soft[0, 20, 20] > 0.99 and soft[0, 2, 2] < 0.01


def test_choke_on_the_command_line(model_path, media, tmp_path):
    model_path("selfie")
    src = media / "clips" / "carphone.mp4"
    for name, extra in (("plain", []), ("choked", ["--choke", "6"])):
        bgvid_cli("run", src, "-o", tmp_path / name, "--frames", "0-1", "--model", "selfie", "--quiet", *extra, check=0)
    plain = [rgba[..., 3] for _, _, rgba in read_rgba(tmp_path / "plain")]
    choked = [rgba[..., 3] for _, _, rgba in read_rgba(tmp_path / "choked")]
    assert len(plain) == len(choked) == 2  # an empty output must not pass
    assert all((c <= p).all() and c.sum() < p.sum() for c, p in zip(choked, plain, strict=True))
