"""Array kernels, imported as `bgvid.kernels`: each function has an OpenCV/NumPy body (the CPU's fast
path) and a portable body written against one small backend interface (_backend.py: NumPy + SciPy, or
CuPy + cupyx on a GPU), chosen by the input's array type."""

from ._backend import NUMPY, Backend, backend_for, get_array_module
from ._carry import carry_mattes
from ._cleanup import Cleanup, default_cleanup, levels, solidify
from ._core import blur_frames, choke_feather, composite, resize_batch, to_float_rgb
from ._foreground import decontaminate, estimate_foreground
from ._refine import guided_upsample
from ._smooth import DEFAULT_STRENGTH, SmoothState, pixel_grid, smooth_mattes, warmup_frames

__all__ = [
    "DEFAULT_STRENGTH", "NUMPY", "Backend", "Cleanup", "SmoothState", "backend_for", "blur_frames", "carry_mattes",
    "choke_feather", "composite", "decontaminate", "default_cleanup", "estimate_foreground", "get_array_module",
    "guided_upsample", "levels", "pixel_grid", "resize_batch", "smooth_mattes", "solidify", "to_float_rgb",
    "warmup_frames",
]
