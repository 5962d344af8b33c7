"""Data that travels between stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Optional

import numpy as np


@dataclass
class FrameBatch:
    """A batch of frames in presentation order.

    rgb:         [N, H, W, 3] uint8, or uint16 (full 16-bit scale) for inputs deeper than 8 bits;
                 NumPy or CuPy. Already rotated to the displayed orientation.
    frame_index: [N] int64, 0-based index of each decoded input frame in presentation order.
    pts:         [N] int64 timestamps in ``time_base`` (the input stream's), or None where unknown.
    alpha:       [N, H, W] float32 0..1 at frame resolution once segmented (None before).
    foreground:  optional [N, H, W, 3] float32 0..1 foreground colour estimate (matting models).
    planes:      on a device, the encoder-ready planes of every frame (the last stage's output).
    """

    rgb: Any
    frame_index: np.ndarray
    pts: np.ndarray
    time_base: Fraction
    alpha: Any = None
    foreground: Any = None
    planes: Any = None  # kernels._planes.Planes: the encoder's planes, made on a device (then rgb/alpha are None)

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])


@dataclass(frozen=True)
class ColorInfo:
    """Colour tags of the input, carried to the output (BT.709 where the input is untagged)."""

    primaries: int = 1  # AVColorPrimaries, 1 = BT.709
    transfer: int = 1  # AVColorTransferCharacteristic, 1 = BT.709
    matrix: int = 1  # AVColorSpace, 1 = BT.709


@dataclass(frozen=True)
class VideoInfo:
    """What the decoder learnt about an input before decoding frames."""

    path: str
    width: int  # displayed width (rotation applied)
    height: int  # displayed height (rotation applied)
    frame_count: Optional[int]  # container's count, None where unknown
    time_base: Fraction
    average_rate: Optional[Fraction]
    bit_depth: int  # 8 or more; > 8 means frames arrive as uint16
    rotation: int  # degrees counter-clockwise the decoder rotated frames by (0, 90, 180, -90)
    color: ColorInfo = field(default_factory=ColorInfo)
    has_audio: bool = False
    timecode: Optional[str] = None
    is_image: bool = False  # a single still image
    codec: str = ""
