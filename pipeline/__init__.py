"""bgvid: remove the background from video on your own machine.

Public API:
    remove_background(src, dst=None, **options) -> RunResult    the whole `bgvid run`
    iter_mattes(src, **options) -> iterator of (frame_index, pts, rgb, alpha)
    Segmenter                                                   one model on batches of frames
    models: list_models(), pull_model(name), model_path(name)

Importing bgvid loads no model, touches no network and starts no thread.
"""

from ._errors import BgvidError, InputError, ModelError
from ._models import list_models, model_path, pull_model
from ._run import RunResult, iter_mattes, remove_background
from ._segment import Segmenter
from ._types import FrameBatch, VideoInfo

__version__ = "0.1.0"

__all__ = [
    "BgvidError", "FrameBatch", "InputError", "ModelError", "RunResult", "Segmenter", "VideoInfo",
    "iter_mattes", "list_models", "model_path", "pull_model", "remove_background",
]
