"""Array kernels: each function has one body written against an array module (NumPy here; CuPy
bodies arrive with the GPU path and are chosen by the input's array type)."""

from ._core import (
    blur_frames,
    composite,
    get_array_module,
    resize_batch,
    to_float_rgb,
)

__all__ = ["blur_frames", "composite", "get_array_module", "resize_batch", "to_float_rgb"]
