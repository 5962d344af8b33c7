"""`bgvid run` as a library call: remove_background() and iter_mattes()."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional, Union

import numpy as np

from ..device import Device, DeviceChoice, default_model, open_device, resolve_device
from ..errors import InputError
from ..models.segmenter import Segmenter
from ..models.subject import OBJECT_BATCH, OBJECT_EVERY
from ..stages.options import RECURRENT_PREROLL, REFINES, PictureOptions, build_chain
from ..stages.runner import Pipeline

__all__ = ["RECURRENT_PREROLL", "REFINES", "DeviceChoice", "RunResult", "default_model", "iter_mattes",
           "parse_frames", "remove_background", "resolve_device"]

PathLike = Union[str, os.PathLike]
Report = Callable[[str], None]
Refine = Literal["none", "guided"]


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
    subject: Optional[dict] = None  # what --subject resolved to and why (None with --model)

    def to_json(self) -> dict:
        out = {
            "output": str(Path(self.output).resolve()), "frames": self.frames, "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2), "model": self.model, "device": self.device, "provider": self.provider,
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
        }
        if self.subject is not None:
            out["subject"] = self.subject
        return out


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


def _choose_device(device, provider, report) -> tuple[DeviceChoice, Device]:
    """The run's one device: a name (auto, cpu, cuda[:N]) resolved and opened, or a Device given as is."""
    if isinstance(device, Device):
        choice = DeviceChoice(device.name, provider or ("cpu" if device.ort_device == "cpu" else "cuda"),
                              f"{device.name} (given)")
        report(f"Device: {choice.reason}")
        return choice, device
    choice = resolve_device(device, provider)
    report(f"Device: {choice.reason}")
    if choice.device != "cpu":
        # NVDEC through PyAV's hwaccel hands frames back in host memory (one more copy than CPU decode
        # plus upload), and was not measured to pay: decoding stays on the CPU, said out loud.
        report("Decode: on the CPU (PyAV), frames uploaded once per batch; NVDEC is not used")
    return choice, open_device(choice)


def _open(src, options: PictureOptions, *, device, provider, frames, batch_size, threads, report,
          background=None, planes=None):
    """Model, reader and chain of stages for one run. With a range that starts mid-video, the reader
    starts `options.preroll()` frames early and the chain's trim stage drops them after they primed the
    temporal state, so the chunk matches a full run (the render-farm contract). planes: the writer's
    PlaneSpec, for a device chain that ends in encoder planes."""
    from ..io.reader import VideoReader

    choice, device = _choose_device(device, provider, report)
    model = options.model
    if model is None:
        model, why = default_model(choice)
    spec_path = Path(options.model_spec) if options.model_spec else None
    segmenter = Segmenter.from_name(str(model), spec_path=spec_path, provider=choice.provider,
                                    threads=threads or 0, downsample_ratio=options.downsample_ratio, device=device,
                                    report=report)
    subject, objects = None, None
    if options.model is None:
        subject, objects = _choose_subject(src, options, segmenter, choice=choice, device=device, threads=threads,
                                           report=report)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"--batch-size must be a whole number of at least 1, got {batch_size}")
    batch = batch_size or (OBJECT_BATCH if objects is not None else _default_batch(segmenter))
    if segmenter.max_batch == 1 and batch > 1 and not segmenter.recurrent:
        report(f"Model {segmenter.spec.name} runs one frame at a time; batches of {batch} are split")
    preroll = options.preroll(segmenter.recurrent, objects_every=OBJECT_EVERY if objects is not None else 0)
    read_range, first = frames, None
    if frames is not None and preroll and frames[0] > 0:
        first = frames[0]
        read_range = (max(0, first - preroll), frames[1])
    reader = VideoReader(src, frames=read_range, batch_size=batch)
    try:
        chain = build_chain(options, segmenter, width=reader.info.width, height=reader.info.height, first=first,
                            background=background, device=device, planes=planes, source=src, objects=objects,
                            objects_every=OBJECT_EVERY)
    except BaseException:
        reader.close()
        raise
    chain.subject = subject
    return choice, device, segmenter, reader, chain


def _choose_subject(src, options: PictureOptions, segmenter, *, choice, device, threads, report):
    """(SubjectChoice, the object model's Segmenter or None) for a run without --model: --subject person or
    any as given, auto decided from the whole input file (models/subject.py), said out loud."""
    from ..models.subject import OBJECT_MODEL, SubjectChoice, object_segmenter, probe_subject

    if options.subject == "person":
        found = SubjectChoice("person", "--subject person")
    else:
        objects = object_segmenter(src, provider=choice.provider, threads=threads or 0, device=device, report=report)
        found = (SubjectChoice("any", "--subject any") if options.subject == "any"
                 else probe_subject(src, segmenter, objects, report=report))
    if found.subject == "person":
        report(f"Subject: person ({found.reason}): model {segmenter.spec.name}, video matting of people")
        return found, None
    report(f"Subject: any ({found.reason}): {segmenter.spec.name} for people + {OBJECT_MODEL} "
           f"({objects.input_size[0]}x{objects.input_size[1]}, 1 frame in {OBJECT_EVERY}) for every other subject")
    return found, objects


def _frame_range(frames) -> Optional[tuple[int, Optional[int]]]:
    return parse_frames(frames) if isinstance(frames, str) or frames is None else tuple(frames)


def iter_mattes(src: PathLike, *, model: Optional[str] = None, model_spec: Optional[PathLike] = None,
                device: str = "auto", provider: Optional[str] = None, frames: Optional[str | tuple] = None,
                batch_size: Optional[int] = None, threads: int = 0, refine: Refine = "guided",
                smooth: Optional[float] | str = "auto", overrides: Optional[PathLike] = None,
                downsample_ratio: float | str = "auto", subject: str = "auto", cleanup: bool | str = "auto",
                clip_black: float = 0.0, clip_white: float = 1.0,
                report: Optional[Report] = None) -> Iterator[tuple[int, Optional[int], np.ndarray, np.ndarray]]:
    """Yield (frame_index, pts, rgb [H,W,3], alpha [H,W] float32 0..1) for each frame, in order,
    with the same stages as `bgvid run` running in background threads."""
    report = report or (lambda m: None)
    options = PictureOptions.preset("run", model=model, model_spec=model_spec, refine=refine, smooth=smooth,
                                    overrides=overrides, downsample_ratio=downsample_ratio, decontaminate=False,
                                    subject=subject, cleanup=cleanup, clip_black=clip_black, clip_white=clip_white)
    choice, dev, segmenter, reader, chain = _open(
        src, options, device=device, provider=provider, frames=_frame_range(frames), batch_size=batch_size,
        threads=threads, report=report)
    pipeline = Pipeline(reader, chain.stages, context=dev.context)
    try:
        for batch in pipeline:
            if not dev.is_cpu:  # the caller asked for host arrays: this is the download
                batch.rgb, batch.alpha = dev.download(batch.rgb), dev.download(batch.alpha)
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
                      decontaminate: bool = True, choke: float = 0.0, feather: float = 0.0,
                      subject: str = "auto", cleanup: bool | str = "auto", clip_black: float = 0.0,
                      clip_white: float = 1.0, report: Optional[Report] = None,
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
    options = PictureOptions.preset(
        "run", model=model, model_spec=model_spec, downsample_ratio=downsample_ratio, refine=refine, smooth=smooth,
        overrides=overrides, choke=choke, feather=feather, decontaminate=decontaminate, background=background,
        matte=matte, subject=subject, cleanup=cleanup, clip_black=clip_black, clip_white=clip_white)
    src_path = Path(src)
    info = probe(src_path)
    rng = _frame_range(frames)
    if info.is_image and rng not in (None, (0, 0), (0, None)):
        raise InputError(f"{src_path}: --frames does not apply to a single image")
    if rng is not None and info.frame_count and (rng[0] >= info.frame_count or (rng[1] or 0) >= info.frame_count):
        raise InputError(f"--frames {rng[0]}-{'' if rng[1] is None else rng[1]}: {src_path} has "
                         f"{info.frame_count} frames (0-{info.frame_count - 1})")
    dst_path = Path(dst) if dst is not None else default_output(src_path, is_image=info.is_image, matte=matte,
                                                                background=background)
    kind = output_kind(str(dst_path), matte=matte)
    if kind == "mp4" and background is None and not matte:
        raise InputError(f"{dst_path}: MP4 (H.264) has no alpha channel; add --background COLOR|IMAGE|VIDEO|blur, "
                         "or write .mov (ProRes 4444) / .webm (VP9 alpha) / a PNG sequence")
    bg = open_background(background) if background is not None else None
    part = kind in ("prores", "webm") and not info.is_image  # carries a render-farm part record
    writer = VideoWriter(dst_path, info=info, kind=kind, matte=matte, audio=audio and not info.is_image,
                         frames=rng, overwrite=overwrite, metadata={} if part else None,
                         h264=_h264_encoder(kind, device, report))
    try:
        choice, dev, segmenter, reader, chain = _open(
            src_path, options, device=device, provider=provider, frames=rng, batch_size=batch_size, threads=threads,
            report=report, background=bg, planes=writer.plane_spec())
        writer.download = dev.download  # the one download point: encoder planes, once per batch
        if part:
            writer.update_metadata(_part_tags(src_path, info, rng, options.record(segmenter, chain.objects)))
        total = _range_count(info.frame_count, rng)
        pipeline = Pipeline(reader, chain.stages, context=dev.context)
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
    model_name = segmenter.spec.name
    if chain.objects is not None:
        model_name += "+" + chain.objects.segmenter.spec.name
    return RunResult(output=dst_path, frames=done, seconds=seconds, fps=done / seconds if seconds else 0.0,
                     model=model_name, device=choice.device, provider=choice.provider,
                     stage_seconds=stage_seconds, subject=chain.subject.to_json() if chain.subject else None)


def _h264_encoder(kind: str, device, report) -> str:
    """libx264, or the GPU's video encoder (h264_nvenc) for an .mp4 on CUDA where the GPU has one."""
    if kind != "mp4" or device == "cpu" or (isinstance(device, Device) and device.ort_device != "cuda"):
        return "libx264"
    usable, why = resolve_device(device).device != "cpu", ""
    if usable:
        from ..device import nvenc_usable

        usable, why = nvenc_usable()
    if usable:
        report("H.264: the GPU's video encoder (h264_nvenc)")
        return "h264_nvenc"
    if why:
        report(f"H.264: libx264 on the CPU ({why})")
    return "libx264"


def _part_tags(src_path: Path, info, rng, options_record: dict) -> dict:
    import json

    from ..io.join import PART_TAG, part_record

    record = part_record(src_path, frames=rng or (0, None), frame_count=info.frame_count, options=options_record)
    return {PART_TAG: json.dumps(record, sort_keys=True)}


def _range_count(frame_count: Optional[int], rng) -> Optional[int]:
    if rng is None:
        return frame_count
    start, end = rng
    if end is None:
        return None if frame_count is None else max(0, frame_count - start)
    return end - start + 1
