"""bgvid: remove the background from video on your own machine.

Public API:
    remove_background(src, dst=None, **options) -> RunResult    the whole `bgvid run`
    iter_mattes(src, **options) -> iterator of (frame_index, pts, rgb, alpha)
    Segmenter                                                   one model on batches of frames
    models: list_models(), pull_model(name), model_path(name)
    run_live(source, sink, **options) -> LiveStats              the whole `bgvid cam`
    join_parts(parts, dst, audio_from=None) -> JoinResult       the whole `bgvid join`
    run_farm(shots, **options) -> FarmResult                     the whole `bgvid farm` (needs bgvid[farm])

Importing bgvid loads no model, touches no network and starts no thread.
"""

from .apps.cam import LiveSession, LiveStats, open_live, open_sink, open_source, run_live
from .apps.farm import FarmResult, Shot, load_job, make_shots, run_farm
from .apps.run import RunResult, iter_mattes, remove_background
from .errors import BgvidError, InputError, ModelError
from .frames import FrameBatch, VideoInfo
from .io.join import JoinResult, join_parts, read_part
from .models.api import list_models, model_path, pull_model
from .models.segmenter import Segmenter

__version__ = "0.1.0"

__all__ = [
    "BgvidError", "FarmResult", "FrameBatch", "InputError", "JoinResult", "LiveSession", "LiveStats", "ModelError",
    "RunResult", "Segmenter", "Shot", "VideoInfo",
    "iter_mattes", "join_parts", "list_models", "load_job", "make_shots", "model_path", "open_live", "open_sink",
    "open_source", "pull_model", "read_part", "remove_background", "run_farm", "run_live",
]
