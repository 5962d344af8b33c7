"""Where the work runs, chosen once per run (`device=`), never a global.

    choice = resolve_device("auto")            # DeviceChoice: device name, ONNX Runtime provider, why
    device = open_device(choice)               # CpuDevice or CudaDevice: the frame path's one device

A Device moves frames across the host/device boundary and counts every crossing: `upload` (decoded
frames, once per batch), `download` (the encoder's planes, once per batch), and `side` for the documented
side channels (the smoother's small grey frames down and flow fields up; override patches up). On the
CPU both are no-ops. Stage threads enter `device.context()` so CuPy works on the chosen GPU in every
thread (CuPy's current device is per thread).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import InputError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"
PROVIDERS: dict[str, str] = {  # --provider -> ONNX Runtime's execution provider
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())
GPU_INSTALL = 'pip install "bgvid[gpu]" (onnxruntime-gpu with CUDA 13 and cupy-cuda13x)'


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" or "cuda:N": where the kernels run
    provider: str  # ONNX Runtime execution provider key: cpu | cuda | tensorrt
    reason: str


def cuda_status() -> tuple[bool, str]:
    """(usable, why not): CuPy importable and at least one CUDA device it can use."""
    try:
        import cupy
    except ImportError:
        return False, f"CuPy is not installed ({GPU_INSTALL})"
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises anything
        return False, f"CuPy cannot load ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        return False, f"CuPy finds no usable CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "CuPy finds no CUDA device"
    return True, ""


def resolve_device(device: str = "auto", provider: Optional[str] = None) -> DeviceChoice:
    """Pick where work runs. Never falls back silently: an explicit CUDA request that cannot be met is
    an error naming the missing piece; `auto` picks CUDA only when every piece is there and says why."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise InputError(f"--device must be one of {DEVICE_HELP}, got {device!r}")
    if provider is not None and provider not in PROVIDERS:
        raise InputError(f"--provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    have = available_providers()
    if device == "cpu":
        if provider not in (None, "cpu"):
            raise InputError(f"--provider {provider} needs --device cuda")
        return DeviceChoice("cpu", "cpu", "--device cpu")
    cuda_ep = PROVIDERS["cuda"] in have
    if device == "auto":
        if provider == "cpu":
            return DeviceChoice("cpu", "cpu", "auto: CPU (--provider cpu)")
        usable, why = cuda_status()
        if not cuda_ep or not usable:
            missing = why if cuda_ep else "this onnxruntime has no CUDA provider"
            return DeviceChoice("cpu", "cpu", f"auto: CPU ({missing}; {GPU_INSTALL} for a GPU)")
        device = "cuda:0"
        reason = "auto: CUDA (ONNX Runtime's CUDA provider and CuPy are installed)"
    else:
        reason = f"--device {device}"
    provider = provider or "cuda"
    if provider == "cpu":
        raise InputError(f"--device {device} with --provider cpu: the model would run on the CPU and every frame "
                         "would cross to the GPU and back; use --device cpu")
    if PROVIDERS[provider] not in have:
        raise InputError(f"--device {device}: ONNX Runtime provider {provider!r} is not available "
                         "(this onnxruntime has "
                         f"{', '.join(have)}); {GPU_INSTALL}, or run with --device cpu")
    usable, why = cuda_status()
    if not usable:
        raise InputError(f"--device {device}: {why}; or run with --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise InputError(f"--device {device}: there {'is' if count == 1 else 'are'} {count} CUDA device(s) (cuda:0"
                         f"{f'-cuda:{count - 1}' if count > 1 else ''})")
    return DeviceChoice(f"cuda:{index}", provider, f"{reason}: model on ONNX Runtime {provider}, every per-pixel "
                                                  f"step on the GPU (CuPy)")


def default_model(choice: DeviceChoice) -> tuple[str, str]:
    return "rvm", ("default: rvm (video matting of people, steady over time); --model selfie is ~3x faster, "
                   "--model isnet for objects that are not people")


# ------------------------------------------------------------------------------------------ devices

class Device:
    """The frame path's device. Subclasses say how arrays cross and how ONNX Runtime sees them."""

    name = "cpu"
    is_cpu = True
    ort_device = "cpu"  # ONNX Runtime I/O binding device type
    index = 0

    def __init__(self) -> None:
        self.transfers: Counter = Counter()  # "upload", "download", "side_up", "side_down" (calls)
        self.bytes: Counter = Counter()
        self.branches: Counter = Counter()  # stage name -> batches that took the device branch
        self._lock = threading.Lock()

    @property
    def xp(self):
        return np

    def _count(self, kind: str, nbytes: int) -> None:
        with self._lock:
            self.transfers[kind] += 1
            self.bytes[kind] += int(nbytes)

    def upload(self, host: np.ndarray, *, side: bool = False):
        return host

    def download(self, array, *, side: bool = False) -> np.ndarray:
        return array

    def context(self):
        """Entered by every stage thread: makes this device current for CuPy in that thread."""
        return contextlib.nullcontext()

    # ONNX Runtime I/O binding
    def pointer(self, array) -> int:
        return int(array.ctypes.data)

    def wrap(self, pointer: int, shape: tuple, dtype, owner):
        """A device array over memory ONNX Runtime owns (no copy); `owner` must outlive it."""
        count = int(np.prod(shape)) if shape else 1
        raw = (np.ctypeslib.as_ctypes_type(np.dtype(dtype)) * count).from_address(pointer)
        array = np.ctypeslib.as_array(raw).reshape(shape)
        return _Owned(array, owner)

    def close(self) -> None:
        pass


class _Owned(np.ndarray):
    """A NumPy view that keeps the ONNX Runtime value it points into alive."""

    def __new__(cls, array, owner):
        obj = array.view(cls)
        obj._owner = owner
        return obj

    def __array_finalize__(self, obj):
        self._owner = getattr(obj, "_owner", None)


class CpuDevice(Device):
    pass


class CudaDevice(Device):
    """One CUDA device through CuPy. Uploads go through a pinned host buffer on a stream of their own
    (the upload stage's thread), so the next batch crosses while the current one computes."""

    is_cpu = False
    ort_device = "cuda"

    def __init__(self, index: int = 0):
        super().__init__()
        import cupy

        self.index = int(index)
        self.name = f"cuda:{self.index}"
        self._cupy = cupy
        self._local = threading.local()

    @property
    def xp(self):
        return self._cupy

    def context(self):
        return self._cupy.cuda.Device(self.index)

    def _pinned(self, nbytes: int) -> np.ndarray:
        """This thread's pinned staging buffer, grown as needed (reused batch after batch)."""
        buf = getattr(self._local, "pinned", None)
        if buf is None or buf.nbytes < nbytes:
            mem = self._cupy.cuda.alloc_pinned_memory(nbytes)
            buf = np.frombuffer(mem, np.uint8, nbytes)
            self._local.pinned = buf
        return buf

    def _stream(self):
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self._cupy.cuda.Stream(non_blocking=True)
        return stream

    def upload(self, host: np.ndarray, *, side: bool = False):
        cupy = self._cupy
        host = np.ascontiguousarray(host)
        self._count("side_up" if side else "upload", host.nbytes)
        with cupy.cuda.Device(self.index):
            if side or host.nbytes < (1 << 20):
                return cupy.asarray(host)
            staging = self._pinned(host.nbytes)[: host.nbytes].view(host.dtype).reshape(host.shape)
            np.copyto(staging, host)
            out = cupy.empty(host.shape, host.dtype)
            stream = self._stream()
            out.set(staging, stream=stream)
            stream.synchronize()  # in the upload stage's own thread: the compute threads go on meanwhile
            return out

    def download(self, array, *, side: bool = False) -> np.ndarray:
        self._count("side_down" if side else "download", array.nbytes)
        with self._cupy.cuda.Device(self.index):
            return self._cupy.asnumpy(array)

    def pointer(self, array) -> int:
        return int(array.data.ptr)

    def wrap(self, pointer: int, shape: tuple, dtype, owner):
        cupy = self._cupy
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape else np.dtype(dtype).itemsize
        memory = cupy.cuda.UnownedMemory(pointer, nbytes, owner, device_id=self.index)
        return cupy.ndarray(shape, dtype=dtype, memptr=cupy.cuda.MemoryPointer(memory, 0))


def open_device(choice: DeviceChoice) -> Device:
    if choice.device == "cpu":
        return CpuDevice()
    return CudaDevice(int(choice.device.split(":")[1]))


# ------------------------------------------------------------------------------------- diagnostics

def nvenc_usable() -> tuple[bool, str]:
    """(usable, why not) for H.264 on the GPU's video encoder: FFmpeg built with h264_nvenc and a GPU
    that has NVENC (data-centre GPUs such as the H100/H200 have none). Probed by opening the encoder."""
    import av

    try:
        ctx = av.CodecContext.create("h264_nvenc", "w")
    except Exception:  # noqa: BLE001 - not built in
        return False, "this FFmpeg (PyAV) has no h264_nvenc"
    try:
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        from fractions import Fraction

        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except Exception as exc:  # noqa: BLE001 - no NVENC on this GPU / driver
        return False, f"h264_nvenc cannot open here ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return True, ""


def nvdec_status() -> str:
    """What PyAV offers for decoding on the GPU (NVDEC): bgvid decodes on the CPU (see README)."""
    try:
        from av.codec.hwaccel import hwdevices_available

        devices = list(hwdevices_available())
    except Exception:  # noqa: BLE001 - older PyAV
        devices = []
    return f"hwaccel devices in this PyAV: {', '.join(devices) or 'none'}; bgvid decodes on the CPU"


def gpu_report() -> list[str]:
    """`bgvid doctor`'s GPU lines: CuPy, CUDA runtime and driver, each device, ONNX Runtime's GPU
    providers, NVDEC/NVENC, and what --device auto picks."""
    import onnxruntime

    lines = []
    usable, why = cuda_status()
    if usable:
        import cupy

        rt = cupy.cuda.runtime
        runtime, driver = rt.runtimeGetVersion(), rt.driverGetVersion()
        lines.append(f"CuPy         {cupy.__version__}  CUDA runtime {runtime // 1000}.{runtime % 1000 // 10}, "
                     f"driver supports CUDA {driver // 1000}.{driver % 1000 // 10}")
        for i in range(rt.getDeviceCount()):
            props = rt.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            lines.append(f"  cuda:{i}       {name}, {props['totalGlobalMem'] / 2**30:.0f} GiB, "
                         f"compute {props['major']}.{props['minor']}")
    else:
        lines.append(f"CuPy         not usable: {why}")
    have = onnxruntime.get_available_providers()
    gpu_eps = [p for p in have if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    lines.append(f"ORT GPU      {', '.join(gpu_eps) or f'none (this onnxruntime has {len(have)} CPU provider(s))'}")
    ok, why_not = nvenc_usable()
    lines.append(f"NVENC        {'h264_nvenc usable' if ok else why_not}")
    lines.append(f"NVDEC        {nvdec_status()}")
    try:
        choice = resolve_device("auto")
        lines.append(f"--device auto  {choice.reason}")
    except Exception as exc:  # noqa: BLE001 - a diagnostic never fails
        lines.append(f"--device auto  error: {exc}")
    return lines
