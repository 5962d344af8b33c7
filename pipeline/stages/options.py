"""The options that shape the output picture, validated in one place, and the one function that builds
the chain of stages from them. `bgvid run`, `cam` and `edit` use both (and `farm` through `run`); each
command's own defaults are a named preset of the same object.

    opts = PictureOptions.preset("run", model="selfie", smooth=0.5)   # InputError for a bad value
    chain = build_chain(opts, segmenter, width=w, height=h)           # the stages, in order
    for batch in Pipeline(reader, chain.stages): ...
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Optional, Union

from ..errors import InputError
from ..kernels import DEFAULT_STRENGTH, warmup_frames
from ..models.segmenter import parse_downsample_ratio
from .stages import (
    CleanupStage,
    CompositeStage,
    DecontaminateStage,
    FinishStage,
    LevelsStage,
    ObjectsStage,
    PlanesStage,
    SegmentStage,
    SmoothStage,
    TrimStage,
    UploadStage,
    UpsampleStage,
)

REFINES = ("none", "guided")
SUBJECTS = ("auto", "person", "any")  # models/subject.py: what each means and how auto decides
# A recurrent model's state does not converge exactly (unlike the smoother's, see kernels/_smooth):
# measured on carphone.mp4 with rvm, a chunk's first 10 frames differ from a full run by mean
# 0.0019 with no pre-roll, 0.0003-0.0013 with 16 frames and 0.00014-0.00056 with 32 (max 0.09-0.22
# in a few pixels). 32 frames it is.
RECURRENT_PREROLL = 32

PathLike = Union[str, os.PathLike]


def _number(name: str, value, *, allow_str: tuple = ()) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        allowed = " or ".join([*(repr(s) for s in allow_str), "a number"])
        raise InputError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    return value


@dataclass(frozen=True)
class PictureOptions:
    """Everything that decides what the output picture looks like (not where or how fast it is made:
    device, batch size, threads and audio are the caller's). Frozen and validated on construction:
    an instance is always valid; `replace()` validates again.

    model           a catalogue name or your own .onnx (None: the command's default model)
    model_spec      the spec of your own .onnx (TOML/JSON)
    downsample_ratio  rvm only: "auto" or a ratio in (0, 1]
    refine          how the model's matte reaches frame size: "guided" or "none" (bilinear)
    smooth          temporal smoothing: "auto" (the model's default), None or 0 (off), or a strength in [0, 1)
    overrides       a folder of PNG layers and/or an overrides.json of brush strokes
    choke, feather  shrink (negative: grow) the matte by PX pixels; soften its edge over about PX pixels (>= 0)
    decontaminate   replace the colour of half-transparent pixels with the estimated foreground colour
    background      composite over a colour, an image, a video or "blur" (None: keep the alpha)
    matte           write the matte alone
    subject         with no model: "person" (rvm), "any" (people and every other salient subject: rvm fused
                    with ISNet), or "auto" (decided per input file; the caller resolves it before the chain)
    cleanup         solid mattes (kernels/_cleanup): "auto" (on for the object models, ISNet, and the object
                    path's objects; off for rvm and selfie), True or False (False: off everywhere)
    clip_black, clip_white  levels on the final matte: <= clip_black -> 0, >= clip_white -> 1, linear between
    """

    model: Optional[str] = None
    model_spec: Optional[PathLike] = None
    downsample_ratio: Union[float, str] = "auto"
    refine: str = "guided"
    smooth: Union[float, str, None] = "auto"
    overrides: Optional[PathLike] = None
    choke: float = 0.0
    feather: float = 0.0
    decontaminate: bool = True
    background: Optional[str] = None
    matte: bool = False
    subject: str = "auto"
    cleanup: Union[bool, str] = "auto"
    clip_black: float = 0.0
    clip_white: float = 1.0

    def __post_init__(self) -> None:
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise InputError(f"--model must be a model name (bgvid models list) or a .onnx file, got {self.model!r}")
        if self.refine not in REFINES:
            raise InputError(f"--refine must be one of {', '.join(REFINES)}, got {self.refine!r}")
        if self.smooth not in ("auto", None):
            strength = _number("--smooth", self.smooth, allow_str=("auto",))
            if not 0.0 <= strength < 1.0:
                raise InputError(f"--smooth must be a strength in [0, 1) (0 or none: off), got {self.smooth}")
        parse_downsample_ratio(self.downsample_ratio)  # kept as given: the part record stores it as text
        _number("--choke", self.choke)
        if _number("--feather", self.feather) < 0:
            raise InputError(f"--feather must be >= 0 pixels, got {self.feather}")
        for name in ("decontaminate", "matte"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.background is not None and (not isinstance(self.background, str) or not self.background):
            raise InputError(f"--background must be a colour, an image, a video or blur, got {self.background!r}")
        if self.matte and self.background is not None:
            raise InputError("--matte writes the matte alone; it cannot be combined with --background")
        if self.subject not in SUBJECTS:
            raise InputError(f"--subject must be one of {', '.join(SUBJECTS)}, got {self.subject!r}")
        if self.model is not None and self.subject != "auto":
            raise InputError(f"--subject {self.subject} chooses bgvid's models; --model {self.model} forces one "
                             "model: give one of them")
        if self.cleanup not in ("auto", True, False):
            raise InputError(f"cleanup must be one of auto, true, false, got {self.cleanup!r}")
        black, white = _number("--clip-black", self.clip_black), _number("--clip-white", self.clip_white)
        if not 0.0 <= black < white <= 1.0:
            raise InputError(f"--clip-black B and --clip-white W must satisfy 0 <= B < W <= 1, got B={black:g}, "
                             f"W={white:g}")

    @classmethod
    def preset(cls, name: str, **changes) -> "PictureOptions":
        """A command's defaults with `changes` on top, validated."""
        if name not in PRESETS:
            raise InputError(f"no preset {name!r}; presets: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **changes)

    def replace(self, **changes) -> "PictureOptions":
        return dataclasses.replace(self, **changes)

    def smooth_strength(self, recurrent: bool) -> Optional[float]:
        """The strength actually used ("auto" resolved), None for off. Per-frame models flicker and gain
        from smoothing; a recurrent model is steady already (measured on composites: the extra smoother
        changed rvm's dtSSD by < 2% and raised MAD)."""
        if self.smooth == "auto":
            return None if recurrent else DEFAULT_STRENGTH
        return float(self.smooth) if self.smooth else None

    def preroll(self, recurrent: bool, objects_every: int = 0) -> int:
        """Frames a chunk that starts mid-video runs before its first one, so it joins a full run:
        the smoother's warm-up, or the recurrent model's. objects_every: the object path's key-frame
        interval (0: no object path); only its key frames shrink the difference between two starting
        states, so its warm-up is that many times longer."""
        strength = self.smooth_strength(recurrent)
        frames = max(warmup_frames(strength) if strength else 0, RECURRENT_PREROLL if recurrent else 0)
        if objects_every:
            frames = max(frames, objects_every * warmup_frames(self.smooth_strength(False) or 0.0),
                         objects_every)
        return frames

    def cleans(self, segmenter) -> bool:
        """Whether `segmenter`'s matte is made solid. "auto": for the object models (ISNet, models.subject.
        SOLID_MODELS), not for rvm (recurrent, solid already) nor selfie (measured on the composites: MAD
        -8..-17% but dtSSD +14..+72% and Grad +9..+33%: its 256-pixel blobs lose their smooth edges) nor a
        model of your own. The object path of --subject any cleans its objects unless cleanup is False."""
        from ..models.subject import SOLID_MODELS

        if self.cleanup == "auto":
            return segmenter.spec.name in SOLID_MODELS and not segmenter.recurrent
        return bool(self.cleanup)

    def record(self, segmenter, objects=None) -> dict:
        """The render-farm part record of these options on `segmenter` (and the object path's `objects`, an
        ObjectsStage, where the subject is "any"), resolved ("auto" smoothing to its value), with the keys
        parts have always carried: parts rendered with different ones do not join. Keys added since are
        written only where they differ from what parts without them were rendered with (no cleanup, levels
        0-1, the person model alone), so older parts still join newer ones of the same picture."""
        from ..io.join import model_sha256

        record = {
            "model": segmenter.spec.name, "model_sha256": model_sha256(segmenter.model_path),
            "matte": bool(self.matte), "background": self.background, "refine": self.refine,
            "smooth": self.smooth_strength(segmenter.recurrent),
            "overrides": None if self.overrides is None else os.fspath(self.overrides),
            "downsample_ratio": str(self.downsample_ratio),
            "decontaminate": bool(self.decontaminate and not self.matte),
            "choke": float(self.choke), "feather": float(self.feather),
        }
        if objects is not None:
            seg = objects.segmenter
            record["subject"] = "any"
            record["objects"] = {"model": seg.spec.name, "model_sha256": model_sha256(seg.model_path),
                                 "input": list(seg.input_size), "every": objects.every,
                                 "smooth": objects.strength, "cleanup": objects.clean}
        if self.cleans(segmenter):
            record["cleanup"] = True
        if (self.clip_black, self.clip_white) != (0.0, 1.0):
            record["levels"] = [float(self.clip_black), float(self.clip_white)]
        return record


PRESETS: dict[str, PictureOptions] = {
    # bgvid run and bgvid farm: the guided filter, smoothing by model, decontaminated edges.
    "run": PictureOptions(),
    # bgvid cam: a live frame cannot spare the guided filter or decontamination on a CPU; a lighter
    # smoother (0.5) follows motion sooner. Model: MediaPipe Selfie landscape (~3 ms per frame). No cleanup
    # (solid mattes cost ~3-20 ms a frame, more than a live frame can spare).
    "cam": PictureOptions(model="selfie-landscape", refine="none", smooth=0.5, decontaminate=False, background="blur",
                          cleanup=False),
    # bgvid edit: the preview is what `bgvid run --overrides` renders (the matte before the strokes).
    "edit": PictureOptions(decontaminate=False),
}


@dataclass
class Chain:
    """The stages of one run, in order, each slot None where the options leave it out. Apps that drive
    stages themselves (cam's --every, edit's per-frame cache) take the slots they need; everything
    else iterates `stages`. On a device the chain starts with `upload` and ends with `planes`."""

    segment: SegmentStage
    smooth: Optional[SmoothStage]
    trim: Optional[TrimStage]
    upsample: UpsampleStage
    finish: Optional[FinishStage]
    overrides: Optional[object]  # stages.overrides.OverrideStage
    decontaminate: Optional[DecontaminateStage]
    composite: Optional[CompositeStage]
    upload: Optional[UploadStage] = None
    planes: Optional[PlanesStage] = None
    objects: Optional[ObjectsStage] = None
    cleanup: Optional[CleanupStage] = None
    levels: Optional[LevelsStage] = None
    subject: Optional[object] = None  # models.subject.SubjectChoice, where bgvid chose the models

    @property
    def stages(self) -> list:
        return [s for s in (self.upload, self.segment, self.objects, self.smooth, self.trim, self.cleanup,
                            self.upsample, self.levels, self.finish, self.overrides, self.decontaminate,
                            self.composite, self.planes) if s is not None]

    def after_segment(self) -> list:
        stages = self.stages
        return stages[stages.index(self.segment) + 1:]

    def close(self) -> None:
        """Release what every stage holds (thread pools); safe to call more than once."""
        for stage in self.stages:
            stage.close()


def build_chain(options: PictureOptions, segmenter, *, width: int, height: int, first: Optional[int] = None,
                background=None, decontaminate_workers: int = 0, device=None, planes=None, source=None,
                objects=None, objects_every: int = 2) -> Chain:
    """The stages for `options` on `segmenter`'s mattes of width x height frames:

        [upload] -> segment -> [objects] -> [smooth] -> [trim] -> [cleanup] -> upsample -> [levels]
          -> [choke/feather] -> [overrides] -> [decontaminate] -> [composite] -> [planes]

    first: a --frames range that starts mid-video, read `options.preroll()` frames early: the trim stage
    drops those warm-up frames once they primed the temporal state. background: an opened
    io.background.Background for the composite (options.background names it; the caller opens it, so a
    bad background is an error before any model is loaded). device: a bgvid.device.Device; on a GPU the
    frames are uploaded first and, with `planes` (the writer's PlaneSpec), leave as encoder planes.
    source: the input video, which keyframed overrides follow (their tracker decodes from it what it needs).
    objects: the object model's Segmenter for the object path (options.subject "any"): an ObjectsStage runs
    it on every `objects_every`-th frame and fuses its cleaned matte with the person model's."""
    strength = options.smooth_strength(segmenter.recurrent)
    overrides = None
    if options.overrides is not None:
        from .overrides import Overrides, OverrideStage

        overrides = OverrideStage(Overrides.load(options.overrides, width=width, height=height), source=source)
    if options.background is not None and background is None:
        raise InputError("build_chain: options name a background; open it (io.background.open_background) and pass it")
    on_device = device is not None and not device.is_cpu
    chain = Chain(
        segment=SegmentStage(segmenter, foreground=objects is None),
        smooth=SmoothStage(strength) if strength else None,
        trim=TrimStage(first) if first is not None else None,
        upsample=UpsampleStage(options.refine),
        finish=FinishStage(options.choke, options.feather) if options.choke or options.feather else None,
        overrides=overrides,
        decontaminate=(DecontaminateStage(decontaminate_workers) if options.decontaminate and not options.matte
                       else None),
        composite=CompositeStage(background) if background is not None else None,
        upload=UploadStage(device) if on_device else None,
        planes=PlanesStage(planes) if on_device and planes is not None else None,
        objects=(ObjectsStage(objects, every=objects_every, strength=options.smooth_strength(False),
                              refine=options.refine, clean=options.cleanup is not False)
                 if objects is not None else None),
        cleanup=CleanupStage() if options.cleans(segmenter) and objects is None else None,
        levels=(LevelsStage(options.clip_black, options.clip_white)
                if (options.clip_black, options.clip_white) != (0.0, 1.0) else None),
    )
    for stage in chain.stages:
        stage.device = device
    return chain
