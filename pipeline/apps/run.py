"""`bgvid run` as a library call: remove_background() and iter_mattes()."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional, Union

import numpy as np

from ..errors import InputError
from ..kernels import DEFAULT_STRENGTH, warmup_frames
from ..models.segmenter import PROVIDERS, Segmenter, available_providers
from ..stages.stages import (
    CompositeStage,
    DecontaminateStage,
    FinishStage,
    Pipeline,
    SegmentStage,
    SmoothStage,
    TrimStage,
    UpsampleStage,
)

PathLike = Union[str, os.PathLike]
Report = Callable[[str], None]
DEVICE_HELP = "auto, cpu, cuda or cuda:N"
Refine = Literal["none", "guided"]
REFINES = ("none", "guided")
# A recurrent model's state does not converge exactly (unlike the smoother's, see kernels/_smooth):
# measured on carphone.mp4 with rvm, a chunk's first 10 frames differ from a full run by mean
# 0.0019 with no pre-roll, 0.0003-0.0013 with 16 frames and 0.00014-0.00056 with 32 (max 0.09-0.22
# in a few pixels). 32 frames it is.
RECURRENT_PREROLL = 32


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" or "cuda:N": where the kernels run
    provider: str  # ONNX Runtime execution provider key: cpu | cuda | tensorrt
    reason: str


def resolve_device(device: str = "auto", provider: Optional[str] = None) -> DeviceChoice:
    """Pick where work runs. Never falls back silently: an explicit CUDA request that cannot be
    met is an error; `auto` says what it chose and why."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device or ""):
        raise InputError(f"--device must be one of {DEVICE_HELP}, got {device!r}")
    if provider is not None and provider not in PROVIDERS:
        raise InputError(f"--provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    have = available_providers()
    cuda_ep = PROVIDERS["cuda"] in have
    if device == "cpu":
        if provider not in (None, "cpu"):
            raise InputError(f"--provider {provider} needs --device cuda")
        return DeviceChoice("cpu", "cpu", "--device cpu")
    if device == "auto":
        if provider in (None, "cpu") and not cuda_ep:
            return DeviceChoice("cpu", "cpu", "auto: CPU (this onnxruntime has no CUDA provider; install bgvid[gpu] for a GPU)")
        if provider is None:
            provider = "cuda"
        device = "cuda:0"
    # CUDA requested (or chosen by auto). The CuPy kernels are not part of this release yet, so the
    # model runs on the GPU provider and the per-pixel kernels on the CPU; say so.
    if provider is None:
        provider = "cuda"
    if PROVIDERS[provider] not in have:
        raise InputError(
            f"--device {device}: ONNX Runtime provider {provider!r} is not available (this onnxruntime has "
            f"{', '.join(have)}); install bgvid[gpu], or run with --device cpu"
        )
    return DeviceChoice(device if ":" in device else "cuda:0", provider,
                        f"{device}: model on ONNX Runtime {provider}; per-pixel kernels on the CPU in this release")


def default_model(choice: DeviceChoice) -> tuple[str, str]:
    return "rvm", ("default: rvm (video matting of people, steady over time); --model selfie is ~3x faster, "
                   "--model isnet for objects that are not people")


def parse_frames(text: Optional[str]) -> Optional[tuple[int, Optional[int]]]:
    """'A-B' (inclusive), 'A' (one frame) or 'A-' (to the end) -> (A, B or None)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d+)?)?\s*", str(text))
    if not m:
        raise InputError(f"--frames {text!r}: expected A-B (inclusive, 0-based), A, or A-")
    start = int(m.group(1))
    end = int(m.group(3)) if m.group(3) else (None if m.group(2) else start)
    if end is not None and end < start:
        raise InputError(f"--frames {text}: the range is reversed ({start} > {end})")
    return start, end


@dataclass
class RunResult:
    output: Path
    frames: int
    seconds: float
    fps: float
    model: str
    device: str
    provider: str
    stage_seconds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "output": str(Path(self.output).resolve()), "frames": self.frames, "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2), "model": self.model, "device": self.device, "provider": self.provider,
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
        }


def default_output(src: Path, *, is_image: bool, matte: bool, background: Optional[str]) -> Path:
    stem = src.stem if src.is_file() else src.name.replace("%", "")
    parent = src.parent
    if is_image:
        return parent / f"{stem}_{'matte' if matte else 'alpha'}.png"
    if matte:
        return parent / f"{stem}_matte.mov"
    if background is not None:
        return parent / f"{stem}_bg.mp4"
    return parent / f"{stem}_alpha.mov"


def _default_batch(segmenter: Segmenter) -> int:
    if segmenter.recurrent:
        return 4  # frames still run one at a time; batches only amortise the queues
    if segmenter.max_batch == 1:
        return 1
    h, w = segmenter.input_size
    return 8 if h * w <= 512 * 512 else 2


def _check_quality_options(refine: str, smooth) -> None:
    if refine not in REFINES:
        raise InputError(f"--refine must be one of {', '.join(REFINES)}, got {refine!r}")
    if smooth is not None and smooth != "auto" and not 0.0 <= float(smooth) < 1.0:
        raise InputError(f"--smooth must be a strength in [0, 1) ({DEFAULT_STRENGTH} is the default), got {smooth}")


def _open(src, *, model, model_spec, device, provider, frames, batch_size, threads, refine, smooth, report,
          overrides=None, downsample_ratio="auto", choke=0.0, feather=0.0):
    """Model, reader and stages for one run. With smoothing and a range that starts mid-video, the
    reader starts `warmup_frames(smooth)` frames early and a TrimStage drops them after they primed
    the smoother, so the chunk matches a full run (the render-farm contract)."""
    from ..io.reader import VideoReader

    choice = resolve_device(device, provider)
    report(f"Device: {choice.reason}")
    if model is None:
        model, why = default_model(choice)
        report(f"Model: {why}")
    spec_path = Path(model_spec) if model_spec else None
    segmenter = Segmenter.from_name(str(model), spec_path=spec_path, provider=choice.provider,
                                    threads=threads or 0, downsample_ratio=downsample_ratio, report=report)
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    batch = batch_size or _default_batch(segmenter)
    if segmenter.max_batch == 1 and batch > 1 and not segmenter.recurrent:
        report(f"Model {segmenter.spec.name} runs one frame at a time; batches of {batch} are split")
    if smooth == "auto":
        # Per-frame models flicker and gain from smoothing; a recurrent model is steady already
        # (measured on composites: the extra smoother changed rvm's dtSSD by < 2% and raised MAD).
        smooth = None if segmenter.recurrent else DEFAULT_STRENGTH
    preroll = max(warmup_frames(smooth) if smooth else 0, RECURRENT_PREROLL if segmenter.recurrent else 0)
    read_range, first = frames, None
    if frames is not None and preroll and frames[0] > 0:
        first = frames[0]
        read_range = (max(0, first - preroll), frames[1])
    reader = VideoReader(src, frames=read_range, batch_size=batch)
    stages = [SegmentStage(segmenter)]
    if smooth:
        stages.append(SmoothStage(smooth))
    if first is not None:
        stages.append(TrimStage(first))
    stages.append(UpsampleStage(refine))
    if choke or feather:
        if feather < 0:
            raise InputError(f"--feather must be >= 0 pixels, got {feather}")
        stages.append(FinishStage(choke, feather))
    if overrides is not None:
        from ..stages.overrides import Overrides, OverrideStage

        info = reader.info
        stages.append(OverrideStage(Overrides.load(overrides, width=info.width, height=info.height)))
    return choice, segmenter, reader, stages


def iter_mattes(src: PathLike, *, model: Optional[str] = None, model_spec: Optional[PathLike] = None,
                device: str = "auto", provider: Optional[str] = None, frames: Optional[str | tuple] = None,
                batch_size: Optional[int] = None, threads: int = 0, refine: Refine = "guided",
                smooth: Optional[float] | str = "auto", overrides: Optional[PathLike] = None,
                downsample_ratio: float | str = "auto", report: Optional[Report] = None) -> Iterator[tuple[int, Optional[int], np.ndarray, np.ndarray]]:
    """Yield (frame_index, pts, rgb [H,W,3], alpha [H,W] float32 0..1) for each frame, in order,
    with the same stages as `bgvid run` running in background threads."""
    report = report or (lambda m: None)
    _check_quality_options(refine, smooth)
    rng = parse_frames(frames) if isinstance(frames, str) or frames is None else tuple(frames)
    choice, segmenter, reader, stages = _open(
        src, model=model, model_spec=model_spec, device=device, provider=provider, frames=rng,
        batch_size=batch_size, threads=threads, refine=refine, smooth=smooth, report=report, overrides=overrides,
        downsample_ratio=downsample_ratio)
    pipeline = Pipeline(reader, stages)
    try:
        for batch in pipeline:
            for i in range(len(batch)):
                pts = None if batch.pts is None else int(batch.pts[i])
                yield int(batch.frame_index[i]), pts, batch.rgb[i], batch.alpha[i]
    finally:
        pipeline.close()
        reader.close()


def remove_background(src: PathLike, dst: Optional[PathLike] = None, *, model: Optional[str] = None,
                      model_spec: Optional[PathLike] = None, device: str = "auto",
                      provider: Optional[str] = None, background: Optional[str] = None, matte: bool = False,
                      frames: Optional[str | tuple] = None, batch_size: Optional[int] = None,
                      audio: bool = True, overwrite: bool = False, threads: int = 0,
                      refine: Refine = "guided", smooth: Optional[float] | str = "auto",
                      overrides: Optional[PathLike] = None, downsample_ratio: float | str = "auto",
                      decontaminate: bool = True, choke: float = 0.0, feather: float = 0.0, report: Optional[Report] = None,
                      progress: Optional[Callable[[int, Optional[int]], None]] = None) -> RunResult:
    """Remove the background of `src` and write `dst` (format by extension, see `bgvid run --help`).

    report(message) receives one-line notes (model chosen, device, pulls); progress(frames_done,
    total) is called after every written batch. Raises InputError for bad input or options
    (exit 2 in the CLI), BgvidError for other failures. The output appears under its final name only
    when complete."""
    from ..io.background import open_background
    from ..io.reader import probe
    from ..io.writer import VideoWriter, output_kind

    report = report or (lambda m: None)
    started = time.perf_counter()
    _check_quality_options(refine, smooth)
    src_path = Path(src)
    info = probe(src_path)
    rng = parse_frames(frames) if isinstance(frames, str) or frames is None else tuple(frames)
    if info.is_image and rng not in (None, (0, 0), (0, None)):
        raise InputError(f"{src_path}: --frames does not apply to a single image")
    if rng is not None and info.frame_count and (rng[0] >= info.frame_count or (rng[1] or 0) >= info.frame_count):
        raise InputError(f"--frames {rng[0]}-{'' if rng[1] is None else rng[1]}: {src_path} has "
                         f"{info.frame_count} frames (0-{info.frame_count - 1})")
    dst_path = Path(dst) if dst is not None else default_output(src_path, is_image=info.is_image, matte=matte, background=background)
    kind = output_kind(str(dst_path), matte=matte)
    if kind == "mp4" and background is None and not matte:
        raise InputError(f"{dst_path}: MP4 (H.264) has no alpha channel; add --background COLOR|IMAGE|VIDEO|blur, "
                         "or write .mov (ProRes 4444) / .webm (VP9 alpha) / a PNG sequence")
    if matte and background is not None:
        raise InputError("--matte writes the matte alone; it cannot be combined with --background")
    bg = open_background(background) if background is not None else None
    part = kind in ("prores", "webm") and not info.is_image  # carries a render-farm part record
    writer = VideoWriter(dst_path, info=info, kind=kind, matte=matte, audio=audio and not info.is_image,
                         frames=rng, overwrite=overwrite, metadata={} if part else None)
    try:
        choice, segmenter, reader, stages = _open(
            src_path, model=model, model_spec=model_spec, device=device, provider=provider, frames=rng,
            batch_size=batch_size, threads=threads, refine=refine, smooth=smooth, report=report,
            overrides=overrides, downsample_ratio=downsample_ratio, choke=choke, feather=feather)
        if part:
            writer.update_metadata(_part_tags(src_path, info, rng, segmenter, matte=matte, background=background,
                                              refine=refine, smooth=smooth, overrides=overrides,
                                              downsample_ratio=downsample_ratio, decontaminate=decontaminate,
                                              choke=choke, feather=feather))
        if decontaminate and not matte:
            stages.append(DecontaminateStage())
        if bg is not None:
            stages.append(CompositeStage(bg))
        total = _range_count(info.frame_count, rng)
        pipeline = Pipeline(reader, stages)
        done = 0
        encode_seconds = 0.0
        try:
            for batch in pipeline:
                t0 = time.perf_counter()
                writer.push(batch)
                encode_seconds += time.perf_counter() - t0
                done += len(batch)
                if progress:
                    progress(done, total)
            if done == 0:
                raise InputError(f"{src_path}: no frames to write in the requested range")
            t0 = time.perf_counter()
            writer.push(None)
            encode_seconds += time.perf_counter() - t0
        finally:
            pipeline.close()
            reader.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bg is not None:
            bg.close()
    seconds = time.perf_counter() - started
    stage_seconds = dict(pipeline.seconds, encode=encode_seconds)
    return RunResult(output=dst_path, frames=done, seconds=seconds, fps=done / seconds if seconds else 0.0,
                     model=segmenter.spec.name, device=choice.device, provider=choice.provider,
                     stage_seconds=stage_seconds)


def picture_options(segmenter: Segmenter, *, matte, background, refine, smooth, overrides, downsample_ratio,
                    decontaminate, choke, feather) -> dict:
    """The options that shape the output picture, resolved (smooth "auto" -> its value), as recorded in
    a render-farm part: parts rendered with different ones do not join."""
    from ..io.join import model_sha256

    if smooth == "auto":
        smooth = None if segmenter.recurrent else DEFAULT_STRENGTH
    return {
        "model": segmenter.spec.name, "model_sha256": model_sha256(segmenter.model_path),
        "matte": bool(matte), "background": background, "refine": refine,
        "smooth": None if not smooth else float(smooth), "overrides": None if overrides is None else os.fspath(overrides),
        "downsample_ratio": str(downsample_ratio), "decontaminate": bool(decontaminate and not matte),
        "choke": float(choke), "feather": float(feather),
    }


def _part_tags(src_path: Path, info, rng, segmenter: Segmenter, **options) -> dict:
    import json

    from ..io.join import PART_TAG, part_record

    record = part_record(src_path, frames=rng or (0, None), frame_count=info.frame_count,
                         options=picture_options(segmenter, **options))
    return {PART_TAG: json.dumps(record, sort_keys=True)}


def _range_count(frame_count: Optional[int], rng) -> Optional[int]:
    if rng is None:
        return frame_count
    start, end = rng
    if end is None:
        return None if frame_count is None else max(0, frame_count - start)
    return end - start + 1
