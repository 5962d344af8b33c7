"""The stages of the frame path, each with one job (the threaded runner that joins them is runner.py).

A stage follows PyAV's encoder protocol: `push(batch)` returns the batches it can emit now,
`push(None)` flushes what it holds. State that must travel between frames (recurrent models,
temporal smoothing) lives in explicit objects owned by the stage, never in globals.

The same stages run on the CPU (NumPy arrays) and on a GPU (CuPy arrays): the kernels pick their body
by the array's module. On a device the chain starts with UploadStage (the frames' one crossing to the
device) and ends with PlanesStage (the encoder's planes, which the writer downloads once per batch);
in between nothing comes back to the host except the documented side channels (stages/../device.py).
Each stage records in `device.branches` when its device branch ran (the tests check every one did).
"""

from __future__ import annotations

from typing import Iterable, Optional, Protocol

import numpy as np

from ..frames import FrameBatch
from ..kernels import (
    DEFAULT_STRENGTH,
    SmoothState,
    carry_mattes,
    composite,
    get_array_module,
    guided_upsample,
    levels,
    resize_batch,
    smooth_mattes,
    solidify,
)


class Stage(Protocol):
    """push(batch) -> the batches it can emit now; push(None) flushes what it holds (then nothing more
    is pushed); close() releases what it holds (threads, pools), also after a failure or an early stop,
    and may be called more than once. Flush and close are separate, as in PyAV."""

    name: str

    def push(self, batch: Optional[FrameBatch]) -> Iterable[FrameBatch]: ...

    def close(self) -> None: ...


class StageBase:
    """What most stages share: nothing to release, and the device they run on (set by build_chain)."""

    name = "stage"
    device = None

    def close(self) -> None:
        pass

    def on_device(self, array) -> bool:
        """True (and recorded) when `array` is a device array: this stage takes its device branch."""
        if array is None or get_array_module(array) is np:
            return False
        if self.device is not None:
            self.device.branches[self.name] += 1
        return True


class SegmentStage(StageBase):
    """Runs the model; sets batch.alpha at the model's resolution."""

    name = "segment"

    def __init__(self, segmenter, state=None, *, foreground: bool = True):
        self.segmenter = segmenter
        self.state = state  # recurrent state (None for per-frame models), carried batch to batch
        self.foreground = foreground  # keep the model's foreground colour (False: nothing downstream uses it)

    def push(self, batch):
        if batch is None:
            return []
        self.on_device(batch.rgb)
        batch.alpha, batch.foreground, self.state = self.segmenter.segment(
            batch.rgb, self.state, size="model", with_foreground=True)
        if not self.foreground:
            batch.foreground = None  # 11 MB a 720p frame, held in the queues for nothing
        return [batch]


class SmoothStage(StageBase):
    """Temporal smoothing at the matte's resolution (see kernels/_smooth.py). Its state is explicit:
    pass `state` to continue from another run; frames must arrive in order."""

    name = "smooth"

    def __init__(self, strength: float = DEFAULT_STRENGTH, state: Optional[SmoothState] = None):
        self.strength = strength
        self.state = state

    def push(self, batch):
        if batch is None:
            return []
        transfer = None
        if self.on_device(batch.alpha) and self.device is not None:
            transfer = (self.device.download, self.device.upload)  # the flow's side channel, counted
        batch.alpha, self.state = smooth_mattes(batch.alpha, batch.rgb, self.state, strength=self.strength,
                                                transfer=transfer)
        return [batch]


class ObjectsStage(StageBase):
    """`--subject any`: every salient subject, not only people. The person model's matte (rvm, at frame
    size, from SegmentStage) is joined by an object model's (ISNet at `segmenter.input_size`):

        key frames (frame_index % every == 0): the object model runs, and its matte is smoothed into
                                               the last one (kernels/_smooth, flow-compensated)
        other frames:                          the last object matte follows the picture's motion
                                               (kernels/_carry), the model does not run
        then  objects = guided_upsample(solidify(matte))          (kernels/_cleanup: solid subjects)
              alpha   = max(person, objects)

    so people keep the person model's matte (its edges and temporal stability: the object matte can
    only add to it) and everything else the object model finds salient is added, solid inside. Key
    frames are chosen by the frame's index in the input, so a --frames chunk picks the same ones as a
    full run. The person model's foreground colour is dropped (it is not that of the objects):
    decontamination estimates it from the frame."""

    name = "objects"

    def __init__(self, segmenter, *, every: int = 2, strength: Optional[float] = DEFAULT_STRENGTH,
                 refine: str = "guided", clean: bool = True, cleanup=None):
        self.segmenter = segmenter
        self.every = max(1, int(every))
        self.strength = float(strength or 0.0)
        self.refine = refine
        self.clean = bool(clean)  # --no-cleanup: the object model's matte as it is
        self.cleanup = cleanup  # kernels._cleanup.Cleanup, None: default_cleanup for the model's size
        self.state: Optional[SmoothState] = None

    def push(self, batch):
        if batch is None:
            return []
        transfer = None
        if self.on_device(batch.rgb) and self.device is not None:
            transfer = (self.device.download, self.device.upload)  # the flow's side channel, counted
        xp = get_array_module(batch.rgb)
        key = (np.asarray(batch.frame_index) % self.every) == 0  # host metadata: never a device sync
        if self.state is None:
            key[0] = True  # nothing to carry yet
        mattes = []
        for i in range(len(batch)):
            if key[i]:
                # one frame per model call: a batch of two doubles the model's working memory (measured at
                # 512x896: 825 MB peak RSS for ISNet alone at batch 1, 1178 MB at batch 2)
                low, _ = self.segmenter.segment(batch.rgb[i:i + 1], None, size="model")
                out, self.state = smooth_mattes(low, batch.rgb[i:i + 1], self.state, strength=self.strength,
                                                transfer=transfer)
            else:
                out, self.state = carry_mattes(batch.rgb[i:i + 1], self.state, transfer=transfer)
            mattes.append(out)
        low = mattes[0] if len(mattes) == 1 else xp.concatenate(mattes)
        if self.clean:
            low = solidify(low, self.cleanup)
        if self.refine == "guided":
            objects = guided_upsample(low, batch.rgb)
        else:
            objects = resize_batch(low, batch.rgb.shape[1:3], interpolation="bilinear")
        person = batch.alpha
        if tuple(person.shape[1:3]) != tuple(objects.shape[1:3]):
            person = resize_batch(person, objects.shape[1:3], interpolation="bilinear")
        batch.alpha = xp.maximum(person, objects)
        batch.foreground = None
        return [batch]


class CleanupStage(StageBase):
    """Solid mattes from a per-frame model (kernels/_cleanup.solidify) at the matte's own resolution,
    before upsampling: holes filled, islands and haze removed, the interior solid, the edge band as the
    model made it."""

    name = "cleanup"

    def __init__(self, cleanup=None):
        self.cleanup = cleanup  # kernels._cleanup.Cleanup, None: default_cleanup for the matte's size

    def push(self, batch):
        if batch is None:
            return []
        self.on_device(batch.alpha)
        batch.alpha = solidify(batch.alpha, self.cleanup)
        return [batch]


class LevelsStage(StageBase):
    """Compositor-style levels on the full-resolution matte: alpha <= black -> 0, >= white -> 1."""

    name = "levels"

    def __init__(self, black: float = 0.0, white: float = 1.0):
        self.black, self.white = float(black), float(white)

    def push(self, batch):
        if batch is None:
            return []
        self.on_device(batch.alpha)
        batch.alpha = levels(batch.alpha, self.black, self.white)
        return [batch]


class UpsampleStage(StageBase):
    """Brings the matte to frame resolution: "none" = bilinear, "guided" = fast guided filter."""

    name = "upsample"

    def __init__(self, refine: str = "none"):
        self.refine = refine

    def push(self, batch):
        if batch is None:
            return []
        self.on_device(batch.alpha)
        if self.refine == "guided":
            batch.alpha = guided_upsample(batch.alpha, batch.rgb)
        else:
            batch.alpha = resize_batch(batch.alpha, batch.rgb.shape[1:3], interpolation="bilinear")
        return [batch]


class FinishStage(StageBase):
    """Matte finishing a compositor expects: choke (shrink/grow) and feather, in pixels."""

    name = "finish"

    def __init__(self, choke: float = 0.0, feather: float = 0.0):
        self.choke, self.feather = choke, feather

    def push(self, batch):
        if batch is None:
            return []
        from ..kernels import choke_feather

        self.on_device(batch.alpha)
        batch.alpha = choke_feather(batch.alpha, choke=self.choke, feather=self.feather)
        return [batch]


class TrimStage(StageBase):
    """Drops warm-up frames (index < first) once they have primed the temporal state."""

    name = "trim"

    def __init__(self, first: int):
        self.first = first

    def push(self, batch):
        if batch is None:
            return []
        keep = batch.frame_index >= self.first  # frame indices are host metadata, never device arrays
        if keep.all():
            return [batch]
        if not keep.any():
            return []
        # frames arrive in order, so the warm-up frames are a prefix: a slice (no mask on device arrays)
        k = int(np.argmax(keep))
        self.on_device(batch.rgb)
        batch.rgb, batch.alpha = batch.rgb[k:], batch.alpha[k:]
        batch.frame_index, batch.pts = batch.frame_index[k:], None if batch.pts is None else batch.pts[k:]
        if batch.foreground is not None:
            batch.foreground = batch.foreground[k:]
        return [batch]


class DecontaminateStage(StageBase):
    """Straight-alpha colour in half-transparent pixels must be the foreground's own colour, not the
    foreground mixed with the old background (the halo every tool's users complain about). Uses the
    model's predicted foreground (rvm's fgr, written into half-transparent pixels) where there is
    one, else a multi-level foreground estimate from the frame and the matte (kernels/_foreground:
    it also fills fully transparent pixels, so 4:2:0 chroma and resizes downstream do not pull the
    old background back into the edge). Opaque pixels keep their colour exactly."""

    name = "decontaminate"

    def __init__(self, workers: int = 0):
        # The estimate is the costliest per-pixel step: the frames of a batch are solved on `workers`
        # threads (0 = one per core), so this stage alone is not the pipeline's bottleneck.
        import os

        if not workers:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = int(workers)
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def push(self, batch):
        if batch is None:
            self.close()  # nothing is held between batches: the flush is the end of the pool
            return []
        alpha = batch.alpha
        if self.on_device(batch.rgb):
            # no data-dependent branch on the device (it would be a hidden device->host transfer)
            from ..kernels import decontaminate

            xp = get_array_module(batch.rgb)
            if batch.foreground is not None:
                top = 65535.0 if batch.rgb.dtype == xp.uint16 else 255.0
                soft = (alpha > 0.0) & (alpha < 1.0)
                estimate = xp.rint(batch.foreground * xp.float32(top)).astype(batch.rgb.dtype)
                batch.rgb = xp.where(soft[..., None], estimate, batch.rgb)
            else:
                batch.rgb = decontaminate(batch.rgb, alpha)
            return [batch]
        soft = (alpha > 0.0) & (alpha < 1.0)
        if not soft.any():
            return [batch]
        if batch.foreground is not None:
            top = 65535.0 if batch.rgb.dtype == np.uint16 else 255.0
            estimate = np.rint(batch.foreground * top).astype(batch.rgb.dtype)
            batch.rgb = np.where(soft[..., None], estimate, batch.rgb)
        else:
            from ..kernels import decontaminate

            if self._pool is None and self.workers > 1 and len(batch) > 1:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bgvid-decontaminate")
            batch.rgb = decontaminate(batch.rgb, alpha, executor=self._pool)
        return [batch]


class CompositeStage(StageBase):
    """Replaces the background: colour, image, looping video or the blurred original.
    The result is opaque (alpha 1)."""

    name = "composite"

    def __init__(self, background):
        self.background = background  # an io.background.Background (the caller opens and closes it)
        self._host_plate = self._device_plate = None

    def _on_device(self, plate):
        """A host plate for device frames: a colour becomes device constants; a still image is uploaded
        once and reused; video frames cross once per batch (a documented side channel)."""
        xp = get_array_module(self._frames)
        if get_array_module(plate) is not np:
            return plate
        if plate.ndim == 1:
            return xp.asarray([float(v) for v in plate], dtype=xp.float32)
        if plate is not self._host_plate:
            self._host_plate, self._device_plate = plate, self.device.upload(plate, side=True)
        return self._device_plate

    def push(self, batch):
        if batch is None:
            return []
        plate = self.background.plates(batch)
        if self.on_device(batch.rgb):
            self._frames = batch.rgb
            plate = self._on_device(plate)
        batch.rgb = composite(batch.rgb, batch.alpha, plate)
        batch.alpha = get_array_module(batch.alpha).ones_like(batch.alpha)
        return [batch]


class UploadStage(StageBase):
    """The frames' one crossing to the device, right after decode: a pinned staging buffer and a
    stream of this stage's own thread, so the next batch uploads while the current one computes."""

    name = "upload"

    def __init__(self, device):
        self.device = device

    def push(self, batch):
        if batch is None:
            return []
        self.device.branches[self.name] += 1
        batch.rgb = self.device.upload(batch.rgb)
        return [batch]


class PlanesStage(StageBase):
    """RGB(A) -> the encoder's planes on the device (kernels/_planes), packed so the writer's download is
    one copy per batch; the frames and mattes are released here."""

    name = "planes"

    def __init__(self, spec):
        self.spec = spec  # kernels._planes.PlaneSpec, from the writer (VideoWriter.plane_spec())

    def push(self, batch):
        if batch is None:
            return []
        from ..kernels._planes import to_planes

        self.on_device(batch.alpha if batch.rgb is None else batch.rgb)
        batch.planes = to_planes(None if self.spec.matte else batch.rgb, batch.alpha, self.spec)
        batch.rgb = batch.alpha = batch.foreground = None
        return [batch]
