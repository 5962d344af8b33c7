"""Backgrounds for composites: a colour, an image, a looping video, or the blurred original."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..kernels import blur_frames, resize_batch

BACKGROUND_HELP = "#rrggbb, a CSS colour name, an image file, a video file (loops) or 'blur'"


def parse_color(text: str) -> Optional[tuple[int, int, int]]:
    """'#rrggbb', '#rgb' or a CSS colour name -> (r, g, b); None if it is not a colour."""
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        return None
    return tuple(int(v) for v in rgb[:3])


class Background:
    """plates(batch) -> an array broadcastable to batch.rgb, on its scale."""

    description = ""

    def plates(self, batch):  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class ColorBackground(Background):
    def __init__(self, rgb: tuple[int, int, int]):
        self.rgb = rgb
        self.description = "#%02x%02x%02x" % rgb

    def plates(self, batch):
        scale = 257.0 if batch.rgb.dtype == np.uint16 else 1.0
        return np.asarray(self.rgb, dtype=np.float32) * scale


def _cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover (H, W) keeping the aspect ratio, then centre-crop: no bars, no stretching."""
    h, w = size
    ih, iw = image.shape[:2]
    scale = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * scale)), max(w, round(iw * scale))
    resized = resize_batch(image[None], (nh, nw))[0]
    top, left = (nh - h) // 2, (nw - w) // 2
    return resized[top:top + h, left:left + w]


def _match_depth(plate: np.ndarray, dtype) -> np.ndarray:
    if plate.dtype == dtype:
        return plate
    if dtype == np.uint16:
        return plate.astype(np.uint16) * 257
    return (plate.astype(np.float32) / 257.0).round().astype(np.uint8)


class ImageBackground(Background):
    def __init__(self, path: Path):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                self.image = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path}: cannot read background image ({exc})") from None
        self.description = str(path)
        self._plate = None

    def plates(self, batch):
        size = batch.rgb.shape[1:3]
        if self._plate is None or self._plate.shape[:2] != size:
            self._plate = _match_depth(_cover(self.image, size), batch.rgb.dtype)
        return self._plate


class VideoBackground(Background):
    """Frames of another video, looping when it runs out."""

    def __init__(self, path: Path):
        from .reader import probe

        probe(path)  # clear error now rather than mid-run
        self.path = path
        self.description = f"{path} (looping)"
        self._frames = self._iter_frames()

    def _iter_frames(self):
        from .reader import VideoReader

        while True:
            count = 0
            with VideoReader(self.path, batch_size=1) as reader:
                for b in reader:
                    for frame in b.rgb:
                        count += 1
                        yield frame
            if count == 0:
                raise InputError(f"{self.path}: background video has no frames")

    def plates(self, batch):
        size = batch.rgb.shape[1:3]
        return np.stack([_match_depth(_cover(next(self._frames), size), batch.rgb.dtype) for _ in range(len(batch))])

    def close(self) -> None:
        self._frames.close()


class BlurBackground(Background):
    description = "blur (the original, blurred)"

    def plates(self, batch):
        return blur_frames(batch.rgb)


def open_background(spec: str) -> Background:
    from .reader import IMAGE_EXTENSIONS

    if spec == "blur":
        return BlurBackground()
    path = Path(spec)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageBackground(path)
        return VideoBackground(path)
    rgb = parse_color(spec)
    if rgb is not None:
        return ColorBackground(rgb)
    raise InputError(f"--background {spec!r}: not a colour and no such file; use {BACKGROUND_HELP}")
