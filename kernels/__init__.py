"""Array kernels: each function has one body written against an array module (NumPy/OpenCV here;
CuPy bodies arrive with the GPU path and are chosen by the input's array type)."""

from ._core import blur_frames, choke_feather, composite, get_array_module, resize_batch, to_float_rgb
from ._foreground import decontaminate, estimate_foreground
from ._refine import guided_upsample
from ._smooth import DEFAULT_STRENGTH, SmoothState, smooth_mattes, warmup_frames

__all__ = [
    "DEFAULT_STRENGTH", "SmoothState", "blur_frames", "choke_feather", "composite", "decontaminate", "estimate_foreground", "get_array_module", "guided_upsample",
    "resize_batch", "smooth_mattes", "to_float_rgb", "warmup_frames",
]
