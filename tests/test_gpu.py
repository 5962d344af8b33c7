"""On a GPU (needs_cuda): every CuPy kernel against its CPU reference, and whole runs with --device cuda
against --device cpu. Skipped with the reason where CUDA, CuPy or ONNX Runtime's CUDA provider is
missing; BGVID_REQUIRE_GPU=1 (benchmarks/gpu_check.sh) turns each skip into a failure. Clips come from
BGVID_TEST_MEDIA or ../shared/media, models from the cache ($BGVID_HOME)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.needs_cuda


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def frames(request):
    """Four real 720p frames (juggle) and a soft low-resolution matte for them."""
    import os
    from pathlib import Path

    import av
    from conftest import SHARED_MEDIA, skip_or_fail

    folder = Path(os.environ.get("BGVID_TEST_MEDIA") or SHARED_MEDIA)
    clip = folder / "clips" / "juggle.mp4"
    if not clip.is_file():
        skip_or_fail(f"clip not found: {clip}")
    with av.open(str(clip)) as c:
        rgb = [f.to_ndarray(format="rgb24") for _, f in zip(range(4), c.decode(video=0), strict=False)]
    yy, xx = np.mgrid[0:256, 0:256]
    low = np.stack([np.clip(1.3 - np.hypot(yy - 128 - 4 * i, xx - 120) / 60, 0, 1)
                    for i in range(4)]).astype(np.float32)
    return np.stack(rgb), low


def _close(gpu, cpu, atol, share=1.0):
    diff = np.abs(np.asarray(gpu, np.float64) - np.asarray(cpu, np.float64))
    assert (diff <= atol).mean() >= share, f"max diff {diff.max()}, share within {atol}: {(diff <= atol).mean()}"


def test_resize_and_composite_on_the_gpu_match_the_cpu(cp, frames):
    from bgvid.kernels import composite, resize_batch

    rgb, low = frames
    for mode in ("bilinear", "area"):
        _close(resize_batch(cp.asarray(rgb), (256, 455), interpolation=mode).get(),
               resize_batch(rgb, (256, 455), interpolation=mode), atol=1)
    alpha = resize_batch(low, rgb.shape[1:3], interpolation="bilinear")
    _close(composite(cp.asarray(rgb), cp.asarray(alpha), cp.asarray([20.0, 128.0, 255.0])).get(),
           composite(rgb, alpha, np.array([20.0, 128.0, 255.0])), atol=1)


def test_guided_upsample_on_the_gpu_matches_the_cpu(cp, frames):
    from bgvid.kernels import guided_upsample

    rgb, low = frames
    _close(guided_upsample(cp.asarray(low), cp.asarray(rgb)).get(), guided_upsample(low, rgb), atol=2e-3)


def test_smoothing_on_the_gpu_matches_the_cpu(cp, frames):
    from bgvid.kernels import smooth_mattes

    rgb, low = frames
    out_gpu, state = smooth_mattes(cp.asarray(low), cp.asarray(rgb), None)
    out_gpu2, _ = smooth_mattes(cp.asarray(low[::-1].copy()), cp.asarray(rgb[::-1].copy()), state)
    out_cpu, state = smooth_mattes(low, rgb, None)
    out_cpu2, _ = smooth_mattes(low[::-1].copy(), rgb[::-1].copy(), state)
    _close(out_gpu.get(), out_cpu, atol=1e-6)
    _close(out_gpu2.get(), out_cpu2, atol=1 / 255, share=0.999)  # cv2.remap's 1/32-pixel weights


def test_choke_feather_and_blur_on_the_gpu_match_the_cpu(cp, frames):
    from bgvid.kernels import blur_frames, choke_feather, resize_batch

    rgb, low = frames
    alpha = resize_batch(low, rgb.shape[1:3], interpolation="bilinear")
    _close(choke_feather(cp.asarray(alpha), choke=3, feather=4).get(), choke_feather(alpha, choke=3, feather=4),
           atol=1e-5)
    _close(choke_feather(cp.asarray(alpha), choke=-2).get(), choke_feather(alpha, choke=-2), atol=0)
    _close(blur_frames(cp.asarray(rgb)).get(), blur_frames(rgb), atol=2)


def test_decontamination_on_the_gpu_matches_the_cpu(cp, frames):
    from bgvid.kernels import decontaminate, resize_batch

    rgb, low = frames
    alpha = resize_batch(low, rgb.shape[1:3], interpolation="bilinear")
    soft = (alpha > 0.02) & (alpha < 0.98)
    gpu, cpu = decontaminate(cp.asarray(rgb), cp.asarray(alpha)).get(), decontaminate(rgb, alpha)
    _close(gpu[soft], cpu[soft], atol=3, share=0.999)
    assert (gpu[alpha >= 1] == rgb[alpha >= 1]).all()


def test_cleanup_levels_and_carry_on_the_gpu_match_the_cpu(cp, frames):
    """--subject any's kernels: solid mattes (cupyx.scipy.ndimage labels and distances against OpenCV's),
    levels, and a matte carried along the flow (cv2.remap's 1/32-pixel weights against exact ones)."""
    from bgvid.kernels import carry_mattes, levels, smooth_mattes, solidify

    rgb, low = frames
    hazy = low.copy()
    hazy[:, 10:14, 10:14] = 0.9  # an island
    hazy[:, 120:124, 110:114] = 0.2  # a pinhole inside the subject
    hazy[:, 200:, :] = np.maximum(hazy[:, 200:, :], 0.15)  # haze
    _close(solidify(cp.asarray(hazy)).get(), solidify(hazy), atol=1e-5)
    _close(levels(cp.asarray(low), 0.1, 0.9).get(), levels(low, 0.1, 0.9), atol=1e-6)
    _, gpu_state = smooth_mattes(cp.asarray(low[:1]), cp.asarray(rgb[:1]), None)
    _, cpu_state = smooth_mattes(low[:1], rgb[:1], None)
    gpu, _ = carry_mattes(cp.asarray(rgb[1:]), gpu_state)
    cpu, _ = carry_mattes(rgb[1:], cpu_state)
    _close(gpu.get(), cpu, atol=1 / 255, share=0.999)


def test_the_object_path_on_cuda_matches_the_cpu(media, model_path, tmp_path):
    """bgvid run --subject any --clip-black 0.05 --clip-white 0.95 on CUDA against the CPU: decoded alpha within
    one 10-bit step on 99% of pixels (the fake-device run of the same code on the CPU: 99.4-99.96%)."""
    from _clips import decode_frames

    import bgvid

    model_path("rvm"), model_path("isnet")
    clip = media / "clips" / "juggle.mp4"
    out = {}
    for device in ("cpu", "cuda"):
        out[device] = tmp_path / f"{device}.mov"
        bgvid.remove_background(clip, out[device], subject="any", clip_black=0.05, clip_white=0.95, device=device,
                                frames="0-11", overwrite=True)
    cpu, gpu = decode_frames(out["cpu"]), decode_frames(out["cuda"])
    assert len(cpu) == len(gpu) == 12
    for a, b in zip(cpu, gpu, strict=True):
        a, b = (np.asarray(f.planes[3]).view(np.uint16).astype(np.int64) for f in (a, b))
        _close(b, a, atol=1, share=0.99)


def test_encoder_planes_on_the_gpu_match_swscale(cp, frames):
    import av

    from bgvid.io.reader import sws_colorspace
    from bgvid.kernels._planes import PlaneSpec, to_planes

    rgb, low = frames
    for fmt in ("yuva444p10le", "yuva420p", "yuv420p"):
        planes = to_planes(cp.asarray(rgb[:1]), None, PlaneSpec(fmt, matrix=1)).download(lambda x: x.get())
        ref = av.VideoFrame.from_ndarray(rgb[0], format="rgb24").reformat(format=fmt, dst_colorspace=sws_colorspace(1),
                                                                         dst_color_range=1)
        for k in range(3):
            p = ref.planes[k]
            dtype = np.uint16 if fmt.endswith("10le") else np.uint8
            expect = np.frombuffer(p, dtype).reshape(p.height, -1)[:, :p.width]
            _close(planes.plane(0, k), expect, atol=1)


@pytest.mark.parametrize("model", ["selfie", "rvm"])
def test_the_model_on_cuda_reads_and_writes_device_memory(cp, frames, model, model_path, tmp_path):
    """I/O binding on CuPy buffers: same mattes as the CPU, and ONNX Runtime's own profile shows no
    frame-sized copy between host and device inside the model."""
    from bgvid.device import CudaDevice
    from bgvid.models.segmenter import Segmenter

    model_path(model)
    rgb, _ = frames
    dev = CudaDevice(0)
    gpu = Segmenter.from_name(model, provider="cuda", device=dev, profile=str(tmp_path / "prof"))
    cpu = Segmenter.from_name(model)
    a_gpu, state = gpu.segment(cp.asarray(rgb[:2]), None, size="model")
    a_gpu2, _ = gpu.segment(cp.asarray(rgb[2:]), state, size="model")
    a_cpu, state = cpu.segment(rgb[:2], None, size="model")
    a_cpu2, _ = cpu.segment(rgb[2:], state, size="model")
    _close(cp.concatenate([a_gpu, a_gpu2]).get(), np.concatenate([a_cpu, a_cpu2]), atol=1 / 1023, share=0.999)
    events = json.loads(open(gpu.end_profile()).read())
    frame_bytes = rgb[0].size  # a uint8 frame; any tensor this big crossing is a frame-sized copy
    copies = [e for e in events if e.get("args", {}).get("op_name", "").startswith("Memcpy")
              and int(e["args"].get("output_size", 0)) >= frame_bytes]
    assert copies == [], [(e["name"], e["args"].get("output_size")) for e in copies]


FORMATS = {"mov": ".mov", "webm": ".webm", "png": "/", "mp4": ".mp4"}


def _plane(frame, k: int) -> np.ndarray:
    p = frame.planes[k]
    dtype = np.uint16 if frame.format.name.endswith("le") else np.uint8
    return np.frombuffer(p, dtype).reshape(p.height, -1)[:, :p.width]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("model", ["selfie", "rvm"])
def test_bgvid_run_on_cuda_matches_the_cpu(fmt, model, media, model_path, tmp_path, monkeypatch):
    """Decoded alpha within one 10-bit step on 99.9% of pixels (.mov, PNG); PSNR >= 45 dB against the CPU
    output for the lossy formats (.webm decoded; .mp4 as handed to the H.264 encoder, since libx264's
    output varies between runs of the same input on its own)."""
    from _clips import decode_frames

    import bgvid
    from bgvid.io.writer import VideoWriter

    model_path(model)
    seen: list = []
    if fmt == "mp4":
        video_frame, planes_frame = VideoWriter._video_frame, VideoWriter._planes_frame

        def keep(frame):
            seen.append(np.concatenate([_plane(frame, k).ravel() for k in range(3)]).astype(float))
            return frame

        monkeypatch.setattr(VideoWriter, "_video_frame", lambda self, rgb, a: keep(video_frame(self, rgb, a)))
        monkeypatch.setattr(VideoWriter, "_planes_frame", lambda self, planes, i: keep(planes_frame(self, planes, i)))
    clip = media / "clips" / "juggle.mp4"
    suffix = FORMATS[fmt]
    extra = {"background": "#2080ff"} if fmt == "mp4" else {}
    out = {}
    for device in ("cpu", "cuda"):
        dst = tmp_path / (f"{device}/" if suffix == "/" else f"{device}{suffix}")
        bgvid.remove_background(clip, dst, model=model, device=device, frames="0-23", overwrite=True, **extra)
        out[device] = dst
    if fmt == "png":
        from PIL import Image

        cpu = [np.asarray(Image.open(p)) for p in sorted(out["cpu"].glob("*.png"))]
        gpu = [np.asarray(Image.open(p)) for p in sorted(out["cuda"].glob("*.png"))]
        assert len(cpu) == len(gpu) == 24
        for a, b in zip(cpu, gpu, strict=True):
            _close(b[..., 3].astype(int) * 1023 // 255, a[..., 3].astype(int) * 1023 // 255, atol=1, share=0.999)
        return
    if fmt == "mp4":
        assert len(seen) == 48
        for x, y in zip(seen[:24], seen[24:], strict=True):
            psnr = 10 * np.log10(255 ** 2 / max(((x - y) ** 2).mean(), 1e-12))
            assert psnr >= 45, f"PSNR {psnr:.1f} dB"
        return
    decoder = "libvpx-vp9" if fmt == "webm" else None
    cpu, gpu = decode_frames(out["cpu"], decoder=decoder), decode_frames(out["cuda"], decoder=decoder)
    assert len(cpu) == len(gpu) == 24
    for a, b in zip(cpu, gpu, strict=True):
        if fmt == "mov":
            _close(_plane(b, 3), _plane(a, 3), atol=1, share=0.999)
        else:
            x, y = a.to_ndarray(format="rgb24").astype(float), b.to_ndarray(format="rgb24").astype(float)
            psnr = 10 * np.log10(255 ** 2 / max(((x - y) ** 2).mean(), 1e-12))
            assert psnr >= 45, f"PSNR {psnr:.1f} dB"
