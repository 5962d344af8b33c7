"""Test composites with exact alpha: a real RGBA foreground moving over a moving background.

    I_t = a_t * F_t + (1 - a_t) * B_t

computed in float64 from the very arrays make_composite returns and rounded once to uint8, so a_t is
the true alpha of I_t by construction (up to that one rounding of I). a_t is quantised to 16 bits
before compositing, so the 16-bit PNGs write_composite saves read back as exactly the alpha used.

Foreground: an RGBA image (path or array, straight alpha), scaled once to fit 80% of the frame, then
moved per frame with cv2.warpAffine on premultiplied colour and alpha (sub-pixel, bilinear) and
unpremultiplied: warping straight colour would blend the colour hidden under alpha 0 into the edges.

Background: a still (path or [h, w, 3] uint8 array) panned or zoomed with sub-pixel steps, or the
frames of a video (read with PyAV, scaled to cover the frame, centre-cropped; played back and forth
when it is shorter than the composite).

motion: "pan" (foreground glides across, background pans), "zoom" (foreground grows, background zooms
in), "static" (nothing moves: a baseline for dtSSD). All paths are eased, so velocities are smooth, and
drawn from `seed`.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Union

import av
import cv2
import numpy as np

DEFAULT_SIZE = (288, 512)  # (H, W): RVM's low-resolution evaluation size (512x288)
MOTIONS = ("pan", "zoom", "static")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

Source = Union[str, os.PathLike, np.ndarray]


# ------------------------------------------------------------------------------------------ input

def _to_unit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535
    return arr.astype(np.float32)


def _read_image(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img


def load_rgba(src: Source) -> np.ndarray:
    """float32 [h, w, 4] straight RGBA 0..1 from a path (8/16-bit PNG) or an RGBA array."""
    if isinstance(src, np.ndarray):
        rgba = src
    else:
        bgra = _read_image(Path(src), cv2.IMREAD_UNCHANGED)
        if bgra.ndim != 3 or bgra.shape[2] != 4:
            raise ValueError(f"{src}: the foreground needs an alpha channel")
        rgba = bgra[..., [2, 1, 0, 3]]
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"foreground must be [h, w, 4] RGBA, got {rgba.shape}")
    return _to_unit(rgba)


def read_alpha(path: Union[str, os.PathLike]) -> np.ndarray:
    """float32 [H, W] 0..1 from a grey PNG (16-bit / 65535, 8-bit / 255; colour: first channel)."""
    a = _read_image(Path(path), cv2.IMREAD_UNCHANGED)
    return _to_unit(a if a.ndim == 2 else a[..., 0])


# ------------------------------------------------------------------------------------- motion

def _ease(t: int, frames: int) -> float:
    """0 -> 1 over the clip with zero velocity at both ends (no jerk at the first/last frame)."""
    u = t / max(1, frames - 1)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def _check(frames: int, size, motion: str) -> tuple[int, int]:
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    h, w = (int(v) for v in size)
    if h < 2 or w < 2:
        raise ValueError(f"size is (H, W), got {size}")
    return h, w


def _cover(img: np.ndarray, h: int, w: int, margin: float = 1.0) -> np.ndarray:
    """Scale so the picture covers margin * (h, w), keeping its aspect."""
    s = margin * max(h / img.shape[0], w / img.shape[1])
    dsize = (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s)))
    return cv2.resize(img, dsize, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def _still_frames(img: np.ndarray, frames: int, h: int, w: int, rng, motion: str) -> Iterator[np.ndarray]:
    # 25% margin leaves room to pan; INTER_AREA first so the per-frame bilinear warp never aliases
    plate = _cover(_to_unit(img), h, w, margin=1.25)
    ph, pw = plate.shape[:2]
    flip = rng.random() < 0.5
    for t in range(frames):
        e = _ease(t, frames)
        e = 1 - e if flip else e
        z = 1.0 - 0.2 * e if motion == "zoom" else 1.0  # window size relative to the frame
        if motion == "pan":
            ox, oy = e * (pw - w), 0.5 * (ph - h) * (1 + 0.5 * np.sin(2 * np.pi * e))
        else:  # zoom into / stay at the centre
            ox, oy = 0.5 * (pw - z * w), 0.5 * (ph - z * h)
        m = np.array([[z, 0, ox], [0, z, oy]])  # frame pixel -> plate pixel
        yield cv2.warpAffine(plate, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)


def _video_frames(path: Path, frames: int, h: int, w: int) -> Iterator[np.ndarray]:
    seen: list[np.ndarray] = []  # uint8, kept to play the clip backwards when it runs out
    with av.open(str(path)) as container:
        for f in container.decode(video=0):
            if len(seen) == frames:
                break
            big = _cover(f.to_ndarray(format="rgb24"), h, w)
            y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
            seen.append(np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w]))
            yield _to_unit(seen[-1])
    if not seen:
        raise ValueError(f"{path}: no video frames")
    n, period = len(seen), max(1, 2 * len(seen) - 2)
    for t in range(n, frames):  # ping-pong: 0..n-1, n-2..1, 0..: no jump cut in the background
        k = t % period
        yield _to_unit(seen[k if k < n else period - k])


def background_frames(background: Source, *, frames: int, size=DEFAULT_SIZE, seed: int = 0,
                      motion: str = "pan") -> Iterator[np.ndarray]:
    """The B_t that make_composite uses with the same arguments: float32 [H, W, 3] 0..1."""
    h, w = _check(frames, size, motion)
    rng = np.random.default_rng([seed, 1])
    if isinstance(background, np.ndarray):
        return _still_frames(background, frames, h, w, rng, motion)
    path = Path(background)
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        rgb = _read_image(path, cv2.IMREAD_COLOR)[..., ::-1]
        return _still_frames(rgb, frames, h, w, rng, motion)
    return _video_frames(path, frames, h, w)


def _foreground_poses(frames: int, h: int, w: int, fh: int, grounded: bool, rng, motion: str
                      ) -> Iterator[tuple[float, float, float]]:
    """(scale, centre x, centre y) per frame, in frame pixels. A grounded foreground (one cut off by the
    bottom of its own picture, like both sample foregrounds) keeps that cut below the frame's bottom
    edge, or the composite would show an opaque straight edge in mid-air."""
    span = rng.uniform(0.15, 0.3) * w * rng.choice([-1, 1])
    phase = rng.uniform(0, 2 * np.pi)
    grow = rng.choice([-1, 1])
    for t in range(frames):
        e = _ease(t, frames)
        scale, cx, bob = 1.0, w / 2, 0.0
        if motion == "pan":
            cx, bob = w / 2 + span * (e - 0.5), 0.04 * h * (0.5 + 0.5 * np.sin(2 * np.pi * e + phase))
        elif motion == "zoom":
            scale, cx = 1.0 + 0.15 * grow * (2 * e - 1), w / 2 + 0.1 * span * e
        half = scale * (fh - 1) / 2
        yield scale, cx, (h - half + bob if grounded else h / 2 + bob)


# ----------------------------------------------------------------------------------------- output

def make_composite(foreground_rgba_path: Source, background: Source, *, frames: int, size=DEFAULT_SIZE,
                   seed: int = 0, motion: str = "pan"
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (frame_rgb uint8 [H, W, 3], alpha float32 [H, W], foreground_rgb float32 [H, W, 3] 0..1)
    for `frames` frames of the foreground moving over the background (see the module docstring).

    frame == round(255 * (alpha * foreground + (1 - alpha) * B_t)), B_t from background_frames(...)
    with the same arguments; alpha is a multiple of 1/65535."""
    h, w = _check(frames, size, motion)
    rgba = load_rgba(foreground_rgba_path)
    fh, fw = rgba.shape[:2]
    s = 0.8 * min(h / fh, w / fw)
    premult = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    premult = cv2.resize(premult, (max(1, round(fw * s)), max(1, round(fh * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    fh, fw = premult.shape[:2]
    grounded = bool(rgba[-1, :, 3].max() > 0.5)

    rng = np.random.default_rng([seed, 0])
    poses = _foreground_poses(frames, h, w, fh, grounded, rng, motion)
    for (scale, cx, cy), bg in zip(poses, background_frames(background, frames=frames, size=(h, w),
                                                             seed=seed, motion=motion), strict=False):
        # foreground pixel (x, y) -> frame pixel, centres aligned ((n - 1) / 2 is the middle pixel)
        m = np.array([[scale, 0, cx - scale * (fw - 1) / 2], [0, scale, cy - scale * (fh - 1) / 2]])
        warped = cv2.warpAffine(premult, m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        a_raw = np.clip(warped[..., 3], 0, 1)
        alpha = (np.round(a_raw * 65535) / 65535).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            fg = np.where(a_raw[..., None] > 0, warped[..., :3] / a_raw[..., None], 0)
        fg = np.clip(fg, 0, 1).astype(np.float32)
        a = alpha.astype(np.float64)[..., None]
        comp = a * fg + (1 - a) * bg
        frame = np.clip(np.round(comp * 255), 0, 255).astype(np.uint8)
        yield frame, alpha, fg


def _prepare_dir(folder: Path, overwrite: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.glob("[0-9]*.png"))
    if old and not overwrite:
        raise FileExistsError(f"{folder} already holds frames ({old[0].name}...); pass overwrite=True")
    for p in old:  # stale frames from a longer run would be scored against the new clip
        p.unlink()


def write_composite(path_mp4_or_dir: Union[str, os.PathLike], alpha_dir: Union[str, os.PathLike],
                    foreground_rgba_path: Source, background: Source, *, frames: int, size=DEFAULT_SIZE,
                    seed: int = 0, motion: str = "pan", fps=30, overwrite: bool = False) -> int:
    """Write make_composite(...) to disk, for running the CLI on it and scoring the result.

    Frames: a .mp4/.mkv/.mov path gets lossless H.264 in RGB (libx264rgb, crf 0, rgb24: no YUV
    rounding, so the decoded frames are the composite exactly); any other path is a folder of RGB PNGs
    000000.png, 000001.png, ... Alpha: 16-bit grey PNGs 000000.png... in `alpha_dir` (round(a * 65535),
    exact since a is a multiple of 1/65535; read them with read_alpha). Returns the frame count."""
    out, alpha_dir = Path(path_mp4_or_dir), Path(alpha_dir)
    is_video = out.suffix.lower() in VIDEO_SUFFIXES
    if is_video:
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True")
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        _prepare_dir(out, overwrite)
    _prepare_dir(alpha_dir, overwrite)

    comps = make_composite(foreground_rgba_path, background, frames=frames, size=size, seed=seed,
                           motion=motion)
    n = 0
    if is_video:
        with av.open(str(out), "w") as container:
            stream = container.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(100000))
            stream.height, stream.width = (int(v) for v in size)
            stream.pix_fmt = "rgb24"
            stream.options = {"crf": "0", "preset": "veryfast"}
            for frame, alpha, _ in comps:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                cv2.imwrite(str(alpha_dir / f"{n:06d}.png"), np.round(alpha * 65535).astype(np.uint16))
                n += 1
            container.mux(stream.encode())
    else:
        for frame, alpha, _ in comps:
            cv2.imwrite(str(out / f"{n:06d}.png"), np.ascontiguousarray(frame[..., ::-1]))
            cv2.imwrite(str(alpha_dir / f"{n:06d}.png"), np.round(alpha * 65535).astype(np.uint16))
            n += 1
    return n
