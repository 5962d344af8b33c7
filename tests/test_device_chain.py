"""The whole GPU chain on the CPU, through a stand-in device (tests/_fakedevice.py): arrays that refuse
implicit conversion to NumPy as CuPy's do, and a device that counts every crossing. Per batch the only
crossings allowed are one upload of the frames and one download of the encoder's planes, plus the
documented side channels (the smoother's grey frames down and flows up; override patches; background
plates). Every stage's device branch must have run. The same chain's output is then held against the
CPU path's."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from _clips import decode_frames, make_clip
from _fakedevice import FakeDevice

import bgvid
from bgvid.errors import InputError

FORMATS = {  # name: (suffix, extra options)
    "mov": (".mov", {}),
    "webm": (".webm", {}),
    "png": ("/", {}),
    "mp4": (".mp4", {"background": "#2080ff"}),
    "matte": (".mov", {"matte": True}),
}


@pytest.fixture(scope="module")
def person_clip(tmp_path_factory, media_or_none):
    """A short real clip with a person (carphone, 176x144), or a synthetic one where ../shared is absent."""
    if media_or_none is not None:
        return media_or_none / "clips" / "carphone.mp4"
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", width=96, height=64, frames=12)


@pytest.fixture(scope="module")
def media_or_none():
    from conftest import SHARED_MEDIA

    return SHARED_MEDIA if SHARED_MEDIA.is_dir() else None


def _run(src, dst, device, **options):
    return bgvid.remove_background(src, dst, device=device, frames=options.pop("frames", "0-11"), batch_size=4,
                                   overwrite=True, **options)


def _alpha_frames(path):
    if str(path).endswith("/") or path.is_dir():
        from PIL import Image

        return [np.asarray(Image.open(p)) for p in sorted(path.glob("*.png"))]
    decoder = "libvpx-vp9" if str(path).endswith(".webm") else None
    return [f for f in decode_frames(path, decoder=decoder)]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("model", ["selfie", "rvm"])
def test_device_chain_crosses_once_each_way_per_batch(tmp_path, person_clip, model, fmt, model_path):
    model_path(model)  # skips with the reason when the model is not cached
    suffix, extra = FORMATS[fmt]
    dev = FakeDevice()
    dst = tmp_path / ("out/" if suffix == "/" else "out" + suffix)
    result = _run(person_clip, dst, dev, model=model, **extra)
    batches = -(-result.frames // 4)
    t = dev.transfers
    assert t["implicit"] == 0, f"implicit host<->device conversions: {dict(t)}"
    assert t["upload"] == batches, dict(t)
    assert t["download"] == batches, dict(t)
    smoothing = model == "selfie"  # the default: per-frame models are smoothed, rvm is not
    assert t["side_down"] == (result.frames if smoothing else 0), dict(t)
    assert t["side_up"] == (result.frames - 1 if smoothing else 0), dict(t)
    expected = {"upload", "segment", "upsample", "planes"} | ({"smooth"} if smoothing else set())
    if fmt == "mp4":
        expected |= {"decontaminate", "composite"}
    elif fmt != "matte":
        expected |= {"decontaminate"}
    assert expected <= set(dev.branches), f"device branches that never ran: {expected - set(dev.branches)}"
    assert all(dev.branches[name] == batches for name in expected), dict(dev.branches)


def test_device_chain_with_every_option_keeps_to_its_side_channels(tmp_path, person_clip, model_path):
    model_path("selfie")
    strokes = tmp_path / "o.json"
    strokes.write_text(json.dumps([{"frames": "2-9", "mode": "restore", "size": 20, "softness": 0.5,
                                    "points": [[20, 20], [40, 30]]}]))
    dev = FakeDevice()
    result = _run(person_clip, tmp_path / "o.mp4", dev, model="selfie", frames="3-11", overrides=strokes,
                  choke=1.0, feather=2.0, background="blur")
    t = dev.transfers
    assert t["implicit"] == 0, dict(t)
    assert result.frames == 9
    assert t["upload"] == 3 and t["download"] == 3, dict(t)  # 12 frames read (3 of warm-up), batches of 4
    for name in ("upload", "segment", "smooth", "trim", "upsample", "finish", "overrides", "decontaminate",
                 "composite", "planes"):
        assert dev.branches[name] >= 1, f"{name} did not take its device branch: {dict(dev.branches)}"


@pytest.mark.parametrize("fmt", ["mov", "png"])
def test_device_chain_alpha_matches_the_cpu_path(tmp_path, person_clip, fmt, model_path):
    """The GPU chain's own code (portable bodies, I/O binding, planes on the device), run on the CPU,
    against the CPU path: decoded alpha within one 10-bit step on 99.9% of pixels."""
    model_path("selfie")
    suffix, extra = FORMATS[fmt]
    cpu_dst = tmp_path / ("cpu/" if suffix == "/" else "cpu" + suffix)
    dev_dst = tmp_path / ("dev/" if suffix == "/" else "dev" + suffix)
    _run(person_clip, cpu_dst, "cpu", model="selfie", **extra)
    _run(person_clip, dev_dst, FakeDevice(), model="selfie", **extra)
    cpu, dev = _alpha_frames(cpu_dst), _alpha_frames(dev_dst)
    assert len(cpu) == len(dev) == 12
    for a, b in zip(cpu, dev, strict=True):
        if fmt == "png":
            a, b = a[..., 3].astype(np.int64) * 1023 // 255, b[..., 3].astype(np.int64) * 1023 // 255
        else:
            a, b = (np.asarray(f.planes[3]).view(np.uint16) for f in (a, b))
            a, b = a.astype(np.int64), b.astype(np.int64)
        within = np.abs(a - b) <= 1
        assert within.mean() >= 0.999, f"only {within.mean():.4f} of alpha within one 10-bit step"


def test_object_path_and_levels_on_the_device_keep_to_their_side_channels(tmp_path, person_clip, model_path):
    """--subject any (rvm fused with ISNet on key frames, cleaned) and --clip-black/--clip-white on the device:
    one upload and one download per batch, the flow's side channel once per frame (the object matte's
    smoothing and carrying), every new stage's device branch taken, no implicit conversion; the alpha within
    one 10-bit step of the CPU path on 99% of pixels and within 0.1 everywhere (the object matte's temporal
    state carries float rounding from frame to frame: measured on carphone 0.04% of pixels past one step on
    frame 0, 0.4-0.6% on frames 1-7, at most 28 steps)."""
    model_path("rvm"), model_path("isnet")
    dev = FakeDevice()
    extra = dict(subject="any", clip_black=0.05, clip_white=0.95)
    result = _run(person_clip, tmp_path / "dev.mov", dev, frames="0-7", **extra)
    t = dev.transfers
    assert t["implicit"] == 0, dict(t)
    assert t["upload"] == 2 and t["download"] == 2, dict(t)
    assert t["side_down"] == result.frames and t["side_up"] == result.frames - 1, dict(t)
    for name in ("upload", "segment", "objects", "upsample", "levels", "decontaminate", "planes"):
        assert dev.branches[name] == 2, f"{name} did not take its device branch: {dict(dev.branches)}"
    _run(person_clip, tmp_path / "cpu.mov", "cpu", frames="0-7", **extra)
    for a, b in zip(_alpha_frames(tmp_path / "cpu.mov"), _alpha_frames(tmp_path / "dev.mov"), strict=True):
        a, b = (np.asarray(f.planes[3]).view(np.uint16).astype(np.int64) for f in (a, b))
        within = np.abs(a - b) <= 1
        assert within.mean() >= 0.99, f"only {within.mean():.4f} of alpha within one 10-bit step"
        assert np.abs(a - b).max() <= 102, np.abs(a - b).max()


def test_auto_probes_on_host_frames_and_the_device_path_keeps_its_crossings(person_clip, model_path, tmp_path):
    """--subject auto on the device: the probe reads its frames on the host and runs both models on them
    (no device array made, none converted), then the chosen path crosses once each way per batch."""
    model_path("rvm"), model_path("isnet")
    dev = FakeDevice()
    result = _run(person_clip, tmp_path / "auto.mov", dev, frames="0-3")
    assert result.subject["chosen"] == "person", result.subject
    assert dict(dev.transfers) == {"upload": 1, "download": 1}, dict(dev.transfers)


def test_cleanup_stage_on_the_device(tmp_path, person_clip, model_path):
    """The cleanup of a per-frame model's matte (on by default for ISNet; asked for here on selfie, the quick
    one) takes its device branch, with no implicit transfer."""
    model_path("selfie")
    dev = FakeDevice()
    _run(person_clip, tmp_path / "o.mov", dev, model="selfie", cleanup=True)
    assert dev.transfers["implicit"] == 0, dict(dev.transfers)
    assert dev.branches["cleanup"] == 3, dict(dev.branches)


def test_mp4_composite_from_the_device_chain_is_close_to_the_cpu_path(tmp_path, person_clip, model_path,
                                                                        monkeypatch):
    """The composite as handed to the H.264 encoder (yuv420p planes: swscale's on the CPU path, the device's
    own on the chain), >= 45 dB apart. Compared before x264: its output varies between runs by itself."""
    from bgvid.io.writer import VideoWriter

    model_path("selfie")
    seen: list = []
    video_frame, planes_frame = VideoWriter._video_frame, VideoWriter._planes_frame

    def keep(frame):
        seen.append(np.concatenate([np.frombuffer(p, np.uint8).reshape(p.height, -1)[:, :p.width].ravel()
                                    for p in frame.planes]).astype(float))
        return frame

    monkeypatch.setattr(VideoWriter, "_video_frame", lambda self, rgb, alpha: keep(video_frame(self, rgb, alpha)))
    monkeypatch.setattr(VideoWriter, "_planes_frame", lambda self, planes, i: keep(planes_frame(self, planes, i)))
    _run(person_clip, tmp_path / "cpu.mp4", "cpu", model="selfie", background="#2080ff")
    cpu, seen[:] = list(seen), []
    _run(person_clip, tmp_path / "dev.mp4", FakeDevice(), model="selfie", background="#2080ff")
    assert len(cpu) == len(seen) == 12
    psnrs = [10 * np.log10(255 ** 2 / max(((x - y) ** 2).mean(), 1e-9)) for x, y in zip(cpu, seen, strict=True)]
    assert min(psnrs) >= 45, psnrs


def test_device_cuda_without_cuda_is_one_line_exit_2(tmp_path, person_clip):
    import subprocess
    import sys

    from conftest import cuda_available

    if cuda_available()[0]:
        pytest.skip("this machine has CUDA: the no-CUDA message cannot be shown here")

    r = subprocess.run([sys.executable, "-m", "bgvid", "run", str(person_clip), "-o", str(tmp_path / "x.mov"),
                        "--device", "cuda", "--model", "selfie"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cuda" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x.mov").exists()


def test_a_device_array_refuses_implicit_conversion():
    dev = FakeDevice()
    d = dev.upload(np.zeros((4, 4), np.float32))
    for convert in (np.asarray, float, bool, lambda x: x.item(), lambda x: x.tolist()):
        with pytest.raises(TypeError):
            convert(d[0, 0] if convert in (float, bool) else d)
    assert dev.transfers["upload"] == 1


def test_resolve_device_never_falls_back_silently():
    from bgvid.device import resolve_device

    with pytest.raises(InputError, match="--device must be one of auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    assert resolve_device("cpu").device == "cpu"
    auto = resolve_device("auto")
    if auto.device == "cpu":
        assert "auto: CPU" in auto.reason


def _decode_check(path):
    with av.open(str(path)) as c:
        return c.streams.video[0].codec_context.name
