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
    CompositeStage,
    DecontaminateStage,
    FinishStage,
    PlanesStage,
    SegmentStage,
    SmoothStage,
    TrimStage,
    UploadStage,
    UpsampleStage,
)

REFINES = ("none", "guided")
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

    def preroll(self, recurrent: bool) -> int:
        """Frames a chunk that starts mid-video runs before its first one, so it joins a full run:
        the smoother's warm-up, or the recurrent model's."""
        strength = self.smooth_strength(recurrent)
        return max(warmup_frames(strength) if strength else 0, RECURRENT_PREROLL if recurrent else 0)

    def record(self, segmenter) -> dict:
        """The render-farm part record of these options on `segmenter`, resolved ("auto" smoothing to its
        value), with the keys parts have always carried: parts rendered with different ones do not join."""
        from ..io.join import model_sha256

        return {
            "model": segmenter.spec.name, "model_sha256": model_sha256(segmenter.model_path),
            "matte": bool(self.matte), "background": self.background, "refine": self.refine,
            "smooth": self.smooth_strength(segmenter.recurrent),
            "overrides": None if self.overrides is None else os.fspath(self.overrides),
            "downsample_ratio": str(self.downsample_ratio),
            "decontaminate": bool(self.decontaminate and not self.matte),
            "choke": float(self.choke), "feather": float(self.feather),
        }


PRESETS: dict[str, PictureOptions] = {
    # bgvid run and bgvid farm: the guided filter, smoothing by model, decontaminated edges.
    "run": PictureOptions(),
    # bgvid cam: a live frame cannot spare the guided filter or decontamination on a CPU; a lighter
    # smoother (0.5) follows motion sooner. Model: MediaPipe Selfie landscape (~3 ms per frame).
    "cam": PictureOptions(model="selfie-landscape", refine="none", smooth=0.5, decontaminate=False, background="blur"),
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

    @property
    def stages(self) -> list:
        return [s for s in (self.upload, self.segment, self.smooth, self.trim, self.upsample, self.finish,
                            self.overrides, self.decontaminate, self.composite, self.planes) if s is not None]

    def after_segment(self) -> list:
        stages = self.stages
        return stages[stages.index(self.segment) + 1:]

    def close(self) -> None:
        """Release what every stage holds (thread pools); safe to call more than once."""
        for stage in self.stages:
            stage.close()


def build_chain(options: PictureOptions, segmenter, *, width: int, height: int, first: Optional[int] = None,
                background=None, decontaminate_workers: int = 0, device=None, planes=None) -> Chain:
    """The stages for `options` on `segmenter`'s mattes of width x height frames:

        [upload] -> segment -> [smooth] -> [trim] -> upsample -> [choke/feather] -> [overrides]
          -> [decontaminate] -> [composite] -> [planes]

    first: a --frames range that starts mid-video, read `options.preroll()` frames early: the trim stage
    drops those warm-up frames once they primed the temporal state. background: an opened
    io.background.Background for the composite (options.background names it; the caller opens it, so a
    bad background is an error before any model is loaded). device: a bgvid.device.Device; on a GPU the
    frames are uploaded first and, with `planes` (the writer's PlaneSpec), leave as encoder planes."""
    strength = options.smooth_strength(segmenter.recurrent)
    overrides = None
    if options.overrides is not None:
        from .overrides import Overrides, OverrideStage

        overrides = OverrideStage(Overrides.load(options.overrides, width=width, height=height))
    if options.background is not None and background is None:
        raise InputError("build_chain: options name a background; open it (io.background.open_background) and pass it")
    on_device = device is not None and not device.is_cpu
    chain = Chain(
        segment=SegmentStage(segmenter),
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
    )
    for stage in chain.stages:
        stage.device = device
    return chain
