"""`bgvid run` end to end: every output format on real footage, faithful timestamps and audio,
clear errors for bad input, nothing half-written."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from _clips import bgvid_cli, make_audio_only, make_clip, make_image, read_video_pts, truncate
from _reference import mean_iou, plain_pipeline

import bgvid
from bgvid import Segmenter
from bgvid.io.reader import VideoReader, read_rgba
from bgvid.models.catalog import get_model

DAVIS_FRAMES = 24



@pytest.fixture(scope="module")
def davis_swing(tmp_path_factory, request):
    """DAVIS 'swing' (real footage, GT person masks) as a near-lossless H.264 clip at 24 fps."""
    from conftest import SHARED_MEDIA

    clip_dir = SHARED_MEDIA / "davis" / "swing"
    if not clip_dir.is_dir():
        pytest.skip(f"real footage not found at {clip_dir}")
    frames = sorted((clip_dir / "frames").glob("*.jpg"))[:DAVIS_FRAMES]
    mask_files = sorted((clip_dir / "masks").glob("*.png"))[:DAVIS_FRAMES]
    masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in mask_files]
    path = tmp_path_factory.mktemp("davis") / "swing.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "8", "preset": "ultrafast"})
        first = cv2.imread(str(frames[0]))
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv444p"
        for f in frames:
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path, masks


@pytest.fixture(scope="module")
def davis_plain_iou(davis_swing, request):
    """IoU of the plain reference pipeline on the same decoded frames."""
    from bgvid.models import cache as _cache

    spec = get_model("selfie")
    path = _cache.cached_model(spec)
    if path is None:
        pytest.skip("model 'selfie' not cached: run `bgvid models pull selfie`")
    seg = Segmenter(path, spec, threads=2)
    alphas = []
    with VideoReader(davis_swing[0], batch_size=8) as reader:
        for batch in reader:
            alphas.extend(plain_pipeline(seg, batch.rgb))
    return mean_iou(alphas, davis_swing[1])


def _alpha_frames(path: Path) -> list[np.ndarray]:
    return [rgba[..., 3].astype(np.float32) / 65535.0 for _, _, rgba in read_rgba(path)]


# --- every output format on real footage -----------------------------------------------------------

@pytest.mark.parametrize("name, codec, tag", [
    ("out.mov", "prores", "ap4h"),
    ("out.webm", "vp9", None),
    ("frames/", "png", None),
])
def test_alpha_output_on_real_footage(model_path, davis_swing, davis_plain_iou, tmp_path, name, codec, tag):
    model_path("selfie")
    src, masks = davis_swing
    out = tmp_path / name
    bgvid_cli("run", src, "-o", out, "--model", "selfie", "--quiet", check=0)
    alphas = _alpha_frames(out)
    assert len(alphas) == DAVIS_FRAMES
    iou = mean_iou(alphas, masks)
    assert iou >= davis_plain_iou - 0.02, (iou, davis_plain_iou)
    if codec == "png":
        names = sorted(p.name for p in out.iterdir())
        assert names == [f"{i:06d}.png" for i in range(DAVIS_FRAMES)]
        return
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        assert (stream.width, stream.height) == (854, 480)
        if tag:
            assert stream.codec_context.codec_tag == tag  # ProRes 4444
    in_pts, in_tb = read_video_pts(src)
    out_pts, out_tb = read_video_pts(out, decoder="libvpx-vp9" if codec == "vp9" else None)
    assert [round(p * out_tb, 3) for p in out_pts] == [round(p * in_tb, 3) for p in in_pts]


def test_matte_output_is_greyscale_alpha(model_path, davis_swing, davis_plain_iou, tmp_path):
    model_path("selfie")
    out = tmp_path / "matte.mov"
    bgvid_cli("run", davis_swing[0], "-o", out, "--matte", "--model", "selfie", "--quiet", check=0)
    greys = [rgba[..., 0].astype(np.float32) / 65535.0 for _, _, rgba in read_rgba(out)]
    assert len(greys) == DAVIS_FRAMES
    assert mean_iou(greys, davis_swing[1]) >= davis_plain_iou - 0.02


def test_mp4_composite_replaces_the_background(model_path, davis_swing, tmp_path):
    model_path("selfie")
    out = tmp_path / "green.mp4"
    bgvid_cli("run", davis_swing[0], "-o", out, "--background", "#00ff00", "--model", "selfie", "--quiet", check=0)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == DAVIS_FRAMES
    person = davis_swing[1][0]
    far = cv2.dilate(person.astype(np.uint8), np.ones((151, 151), np.uint8)) == 0  # well away from the person
    pixels = frames[0][far].astype(int)
    close = np.abs(pixels - [0, 255, 0]).max(axis=1) <= 24
    assert close.mean() > 0.9


# --- timestamps, ranges, audio -----------------------------------------------------------------------

def test_frame_range_keeps_original_timestamps(model_path, tmp_path):
    model_path("rvm")  # --subject person: the person path (rvm), the default before --subject existed
    src = make_clip(tmp_path / "in.mp4", width=96, height=64, frames=20, fps=25)
    out = tmp_path / "part.mov"
    bgvid_cli("run", src, "-o", out, "--frames", "5-9", "--subject", "person", "--quiet", check=0)
    in_pts, in_tb = read_video_pts(src)
    out_pts, out_tb = read_video_pts(out)
    assert [p * out_tb for p in out_pts] == [p * in_tb for p in in_pts[5:10]]


def test_variable_frame_rate_survives(model_path, tmp_path):
    model_path("rvm")  # --subject person: the person path (rvm), the default before --subject existed
    src = make_clip(tmp_path / "vfr.mkv", width=96, height=64, frames=12, vfr=True)
    for name in ("out.mov", "out.webm"):
        out = tmp_path / name
        bgvid_cli("run", src, "-o", out, "--subject", "person", "--quiet", check=0)
        in_pts, in_tb = read_video_pts(src)
        out_pts, out_tb = read_video_pts(out, decoder="libvpx-vp9" if name.endswith("webm") else None)
        assert [round(float(p * out_tb), 3) for p in out_pts] == [round(float(p * in_tb), 3) for p in in_pts]


def test_real_audio_is_kept_or_dropped(model_path, media, tmp_path):
    model_path("rvm")  # --subject person: the person path (rvm), the default before --subject existed
    src = media / "backgrounds" / "handheld_room.mp4"
    expected = {"keep.mov": "aac", "keep.webm": "opus"}
    for name, codec in expected.items():
        bgvid_cli("run", src, "-o", tmp_path / name, "--subject", "person", "--quiet", check=0)
        with av.open(str(tmp_path / name)) as c:
            assert [s.codec_context.name for s in c.streams.audio] == [codec]
    bgvid_cli("run", src, "-o", tmp_path / "silent.mov", "--subject", "person", "--no-audio", "--quiet", check=0)
    with av.open(str(tmp_path / "silent.mov")) as c:
        assert len(c.streams.audio) == 0


def test_person_free_clip_is_mostly_transparent(model_path, media, tmp_path):
    model_path("rvm"), model_path("isnet")  # the default, --subject auto, probes with both
    out = tmp_path / "room.mov"
    bgvid_cli("run", media / "backgrounds" / "handheld_room.mp4", "-o", out, "--quiet", check=0)
    alphas = _alpha_frames(out)
    assert len(alphas) == 36
    assert np.mean([a.mean() for a in alphas]) < 0.35  # the plain selfie pipeline calls up to 31% foreground


# --- defaults, API, JSON, progress ------------------------------------------------------------------

def _read_back_prores(path: Path, frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The alpha planes of a ProRes 4444 file bgvid wrote, after checking codec, tag, size and frame count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.codec_tag) == ("prores", "ap4h")
        assert (stream.width, stream.height) == size
    alphas = _alpha_frames(path)
    assert len(alphas) == frames and all(a.shape == (size[1], size[0]) for a in alphas)
    return alphas


def test_default_output_sits_beside_the_input(model_path, tmp_path):
    model_path("rvm"), model_path("isnet")  # the default, --subject auto, probes with both
    src = make_clip(tmp_path / "clip.mp4", frames=3)
    bgvid_cli("run", src, "--quiet", check=0)
    alphas = _read_back_prores(tmp_path / "clip_alpha.mov", 3, (64, 48))
    # ...and it is the render `-o` names explicitly, with the same defaults
    bgvid_cli("run", src, "-o", tmp_path / "explicit.mov", "--quiet", check=0)
    explicit = _read_back_prores(tmp_path / "explicit.mov", 3, (64, 48))
    assert all(np.array_equal(a, b) for a, b in zip(alphas, explicit, strict=True))
    img = make_image(tmp_path / "still.jpg", width=40, height=30)
    bgvid_cli("run", img, "--quiet", check=0)
    rgba = cv2.imread(str(tmp_path / "still_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (30, 40, 4)


def test_odd_sizes_work_in_every_format(model_path, tmp_path):
    model_path("rvm")  # --subject person: the person path (rvm), the default before --subject existed
    src = make_clip(tmp_path / "odd.mkv", width=53, height=39, frames=4)
    for name, extra in (("o.mov", []), ("o.webm", []), ("o.mp4", ["--background", "white"])):
        bgvid_cli("run", src, "-o", tmp_path / name, "--subject", "person", "--quiet", *extra, check=0)
        with av.open(str(tmp_path / name)) as c:
            size = (c.streams.video[0].width, c.streams.video[0].height)
        assert size == ((54, 40) if name.endswith("mp4") else (53, 39))  # H.264 4:2:0 is padded to even


def test_json_result_and_progress_lines(model_path, tmp_path):
    model_path("rvm"), model_path("isnet")  # the default, --subject auto, probes with both
    src = make_clip(tmp_path / "clip.mp4", frames=6)
    proc = bgvid_cli("run", src, "-o", tmp_path / "o.mov", "--json", "--progress", "json", check=0)
    result = json.loads(proc.stdout)
    assert result["frames"] == 6 and result["device"] == "cpu"
    # the default chooses the models per input and says what and why: no person in a synthetic pattern
    assert result["subject"]["chosen"] == "any" and result["model"] == "rvm+isnet", result
    assert "no person" in result["subject"]["reason"] and len(result["subject"]["probe"]["frames"]) == 6
    assert result["output"] == str((tmp_path / "o.mov").resolve())
    assert {"decode", "segment", "encode"} <= set(result["stage_seconds"])
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["frame"] == 6 and lines[-1]["total"] == 6


def test_json_on_failure_carries_the_error(tmp_path):
    proc = bgvid_cli("run", tmp_path / "missing.mp4", "--json", check=2)
    result = json.loads(proc.stdout)
    assert "missing.mp4" in result["error"]


def test_python_api(model_path, tmp_path):
    model_path("selfie")
    src = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=10)
    result = bgvid.remove_background(src, tmp_path / "o.webm", model="selfie", frames="2-5")
    assert result.frames == 4 and result.output == tmp_path / "o.webm"
    seen = [(i, alpha.shape, alpha.dtype) for i, _, _, alpha in bgvid.iter_mattes(src, model="selfie", frames="3-7")]
    assert seen == [(i, (48, 64), np.float32) for i in range(3, 8)]


# --- bad input: one line, the file named, exit 2, no traceback ---------------------------------------

def _assert_user_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("bgvid: error:")]
    assert len(error_lines) == 1, proc.stderr
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]


def test_missing_input(tmp_path):
    _assert_user_error(bgvid_cli("run", tmp_path / "nope.mp4"), "nope.mp4")


def test_empty_input(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _assert_user_error(bgvid_cli("run", tmp_path / "empty.mp4"), "empty.mp4", "empty")


def test_text_file_is_not_a_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    _assert_user_error(bgvid_cli("run", tmp_path / "notes.mp4"), "notes.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    src = make_audio_only(tmp_path / "sound.m4a")
    _assert_user_error(bgvid_cli("run", src), "sound.m4a", "no video stream")


def test_truncated_input_names_the_frame_and_leaves_nothing(model_path, tmp_path):
    model_path("rvm"), model_path("isnet")  # the default, --subject auto, probes with both
    src = truncate(make_clip(tmp_path / "cut.mp4", width=96, height=64, frames=60, faststart=True), keep=0.5)
    proc = bgvid_cli("run", src, "-o", tmp_path / "o.mov")
    _assert_user_error(proc, "cut.mp4", "frame")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


def test_unsupported_output_extension(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=2)
    _assert_user_error(bgvid_cli("run", src, "-o", tmp_path / "o.avi"), "o.avi", ".mov")


def test_mp4_without_background_explains(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=2)
    _assert_user_error(bgvid_cli("run", src, "-o", tmp_path / "o.mp4"), "--background")


def test_output_directory_that_does_not_exist(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=2)
    _assert_user_error(bgvid_cli("run", src, "-o", tmp_path / "no" / "such" / "o.mov"), "no/such")


@pytest.mark.parametrize("frames, needle", [
    ("8-20", "has 10 frames (0-9)"), ("5-2", "reversed"), ("x", "expected A-B")])
def test_bad_frame_ranges(model_path, tmp_path, frames, needle):
    src = make_clip(tmp_path / "clip.mp4", frames=10)
    _assert_user_error(bgvid_cli("run", src, "-o", tmp_path / "o.mov", "--frames", frames), needle)
    assert not (tmp_path / "o.mov").exists()


def test_existing_output_needs_force(model_path, tmp_path):
    model_path("rvm")  # --subject person: the person path (rvm), the default before --subject existed
    src = make_clip(tmp_path / "clip.mp4", frames=3)
    out = tmp_path / "o.mov"
    out.write_bytes(b"precious")
    _assert_user_error(bgvid_cli("run", src, "-o", out), "o.mov", "--force")
    assert out.read_bytes() == b"precious"
    bgvid_cli("run", src, "-o", out, "--force", "--subject", "person", "--quiet", check=0)
    _read_back_prores(out, 3, (64, 48))  # replaced by the whole render


_ONE_STROKE = '[{"frames": "%s", "mode": "remove", "size": %s, "softness": 0.5, "points": %s}]'


@pytest.mark.parametrize("frames, size, points, needles", [
    ("0", "9" * 5000, "[[1, 1]]", ["stroke [0]: size", "5000 digits"]),  # was a 51-line traceback, exit 1
    ("9" * 5000, "3", "[[1, 1]]", ["stroke [0]", "out of range"]),
    ("0", "1e9", json.dumps([[i * 0.05, 60 + i % 7] for i in range(20_000)]), ["stroke [0]", "per frame"]),
    ("0", "3", "[[1, 1]], \"note\": NaN", ["stroke [0]: key note: NaN"]),
], ids=["huge-size", "huge-frames", "work-per-frame", "nan"])
def test_hostile_override_files_are_one_line_errors(tmp_path, frames, size, points, needles):
    """Needs no cached model: the overrides are checked before any frame is decoded or segmented."""
    from _tiny_model import tiny_model

    model = tiny_model(tmp_path)
    src = make_clip(tmp_path / "clip.mp4", width=176, height=144, frames=2)
    bad = tmp_path / "strokes.json"
    bad.write_text(_ONE_STROKE % (frames, size, points))
    proc = bgvid_cli("run", src, "--model", model, "--overrides", bad, "-o", tmp_path / "o.mov", timeout=120)
    _assert_user_error(proc, "strokes.json", *needles)
    assert not (tmp_path / "o.mov").exists()


def test_bad_background_and_device(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=2)
    _assert_user_error(bgvid_cli("run", src, "-o", tmp_path / "o.mp4", "--background", "notacolour"), "notacolour")
    _assert_user_error(bgvid_cli("run", src, "--device", "tpu"), "auto, cpu, cuda")


def test_cuda_requested_without_cuda_is_said_not_hidden(tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    src = make_clip(tmp_path / "clip.mp4", frames=2)
    _assert_user_error(bgvid_cli("run", src, "--device", "cuda"), "cuda")


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_disk_full_mid_run_is_a_clean_error(model_path, tmp_path):
    model_path("rvm")  # --subject person: the person path (rvm), the default before --subject existed
    src = make_clip(tmp_path / "clip.mp4", width=320, height=240, frames=40)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.run([sys.executable, "-m", "bgvid", "run", str(src), "-o", str(out_dir / "o.mov"),
                           "--subject", "person"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size)
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in proc.stderr and "Traceback" not in proc.stderr
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_leaves_no_file(model_path, tmp_path, sig, code):
    model_path("rvm")  # --subject person: the person path (rvm), the default before --subject existed
    src = make_clip(tmp_path / "long.mp4", width=320, height=240, frames=900)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "bgvid", "run", str(src), "-o", str(out_dir / "o.mov"),
                             "--progress", "json", "--subject", "person"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait until frames are flowing
        if line.startswith("{"):
            break
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == code
    assert list(out_dir.iterdir()) == []
