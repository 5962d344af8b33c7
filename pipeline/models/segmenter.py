"""Segmentation with ONNX Runtime: pre-processing, batched inference, post-processing per the
model's catalogue spec."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np

from ..device import PROVIDERS, CpuDevice, available_providers  # noqa: F401 - available_providers: re-exported
from ..errors import InputError, ModelError
from ..kernels import get_array_module, resize_batch, to_float_rgb
from .catalog import ModelSpec, get_model, load_user_spec, validate_against_graph

Provider = Literal["cpu", "cuda", "tensorrt"]


def resolve_model(model: str, *, spec_path: Optional[Path] = None, pull: bool = True,
                  report: Optional[Callable[[str], None]] = None) -> tuple[Path, ModelSpec]:
    """A catalogue name or a path to an .onnx -> (onnx path, spec). Pulls a catalogue model that is
    not cached yet (with a visible message) unless pull=False."""
    from . import cache as _cache

    if model.endswith(".onnx") or os.sep in model or Path(model).is_file():
        path = Path(model)
        if not path.is_file():
            raise InputError(f"{path}: model file not found")
        return path, load_user_spec(path, spec_path)
    spec = get_model(model)
    path = _cache.cached_model(spec)
    if path is None:
        if not pull:
            raise ModelError(f"model {model!r} is not in the cache; run `bgvid models pull {model}`")
        (report or (lambda m: None))(f"Model {model!r} is not cached yet: pulling it once into {_cache.cache_root()}")
        path, _ = _cache.pull(spec, report=report)
    return path, spec


def _providers(wanted: str, device_id: int) -> list:
    """ONNX Runtime's provider list for `wanted`, on GPU `device_id`. TF32 off on CUDA: it rounds matmul and
    convolution inputs to 10 bits of mantissa, and the GPU path is held to the CPU path's mattes within one
    10-bit step (tests/test_gpu.py)."""
    cuda = ("CUDAExecutionProvider", {"device_id": str(device_id), "use_tf32": "0"})
    if wanted == "CPUExecutionProvider":
        return [wanted]
    if wanted == "CUDAExecutionProvider":
        return [cuda, "CPUExecutionProvider"]
    return [(wanted, {"device_id": str(device_id)}), cuda, "CPUExecutionProvider"]


@dataclass
class RecurrentState:
    """A video-matting model's memory of the frames before: its state tensors, in spec order.
    None in their place means "start of a shot" (zero state)."""

    tensors: tuple


def parse_downsample_ratio(value) -> float | str:
    """'auto' or a ratio in (0, 1] (a number or its text) -> 'auto' or the float; InputError otherwise.
    The one check of the option (PictureOptions and Segmenter both use it)."""
    if value == "auto":
        return "auto"
    ratio = value
    if isinstance(ratio, str):
        try:
            ratio = float(ratio)
        except ValueError:
            ratio = None
    if ratio is None or isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise InputError(f"--downsample-ratio must be 'auto' or a number in (0, 1], got {value!r}")
    return float(ratio)


def auto_downsample_ratio(height: int, width: int) -> float:
    """Robust Video Matting's guideline: the downsampled long side should be 256-512 px."""
    return min(1.0, 512.0 / max(height, width))


class Segmenter:
    """Runs one segmentation model on batches of RGB frames.

    >>> seg = Segmenter.from_name("selfie")
    >>> alpha = seg(frames)                 # [N,H,W,3] uint8 -> [N,H,W] float32 0..1
    >>> low = seg(frames, size="model")     # at the model's resolution

    Recurrent models (video matting) carry state between calls: `segment(rgb, state)` returns the
    new state; per-frame models pass it through unchanged (None).
    """

    def __init__(self, model_path: Path | str, spec: ModelSpec, *, provider: Provider = "cpu",
                 threads: int = 0, input_size: Optional[tuple[int, int]] = None,
                 downsample_ratio: float | str = "auto", device=None, profile: Optional[str] = None,
                 arena: bool = True):
        import onnxruntime as ort

        self.device = device if device is not None else CpuDevice()  # where device-array batches live
        self._ratio_values: dict = {}

        if provider not in PROVIDERS:
            raise InputError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        wanted = PROVIDERS[provider]
        if wanted not in ort.get_available_providers():
            raise ModelError(
                f"ONNX Runtime provider {provider!r} ({wanted}) is not available in this onnxruntime "
                f"build (it has {', '.join(ort.get_available_providers())}); install bgvid[gpu] for CUDA, "
                "or pass --provider cpu"
            )
        options = ort.SessionOptions()
        # Threads are set deliberately: the pipeline runs decode and encode beside the model.
        options.intra_op_num_threads = int(threads) if threads else (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # No busy-waiting between calls: the other stages need those cores (measured -2..-10% CPU
        # per frame for a whole selfie run at 720p).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # arena=False: ONNX Runtime frees each run's tensors instead of keeping its peak in a CPU arena (ISNet at
        # 640x1152: 740 instead of 935 MB peak RSS; for the two models of --subject any, models/subject.py)
        options.enable_cpu_mem_arena = bool(arena)
        if profile:
            options.enable_profiling = True  # ONNX Runtime's own trace (the GPU check reads its Memcpy nodes)
            options.profile_file_prefix = str(profile)
        providers = _providers(wanted, self.device.index)
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{model_path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
        validate_against_graph(spec, self.session, str(model_path))
        self.spec = spec
        self.model_path = Path(model_path)
        self.provider = provider
        self.input_size = self._check_size(input_size) if input_size else spec.size
        downsample_ratio = parse_downsample_ratio(downsample_ratio)
        self.downsample_ratio = downsample_ratio

    @classmethod
    def from_name(cls, model: str = "selfie", *, spec_path: Optional[Path] = None, provider: Provider = "cpu",
                  threads: int = 0, input_size: Optional[tuple[int, int]] = None, pull: bool = True,
                  downsample_ratio: float | str = "auto", device=None, profile: Optional[str] = None,
                  report: Optional[Callable[[str], None]] = None, arena: bool = True) -> "Segmenter":
        path, spec = resolve_model(model, spec_path=spec_path, pull=pull, report=report)
        return cls(path, spec, provider=provider, threads=threads, input_size=input_size,
                   downsample_ratio=downsample_ratio, device=device, profile=profile, arena=arena)

    def end_profile(self) -> Optional[str]:
        """The profile file ONNX Runtime wrote (a Segmenter made with profile=PREFIX), or None."""
        if not self.session.get_session_options().enable_profiling:
            return None
        return self.session.end_profiling()

    def _check_size(self, size: tuple[int, int]) -> tuple[int, int]:
        size = (int(size[0]), int(size[1]))
        spec = self.spec
        if size == spec.size:
            return size
        if not spec.free_hw:
            raise InputError(f"model {spec.name!r} runs only at {spec.size[0]}x{spec.size[1]} (HxW)")
        m = spec.hw_multiple
        if size[0] % m or size[1] % m or min(size) <= 0:
            raise InputError(f"model {spec.name!r}: input size must be a multiple of {m}, got {size[0]}x{size[1]}")
        return size

    @property
    def max_batch(self) -> Optional[int]:
        """None = any batch; 1 for models that must run one frame at a time (and recurrent models,
        whose frames of one video depend on each other)."""
        return None if self.spec.batch and not self.spec.recurrent else 1

    @property
    def recurrent(self) -> bool:
        return self.spec.recurrent is not None

    def preprocess(self, rgb):
        """[N,H,W,3] uint8/uint16 RGB -> the model's input tensor (float32), on the frames' device."""
        spec = self.spec
        xp = get_array_module(rgb)
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise InputError(f"frames must be [N,H,W,3] RGB, got shape {tuple(rgb.shape)}")
        # Bilinear, as the models were trained (MediaPipe warps bilinearly): area averaging looked
        # cleaner but cost selfie-landscape 0.04 IoU on DAVIS swing. In float, not on the uint8 frames:
        # OpenCV's 8-bit resize rounds with 11-bit fixed-point weights, which a GPU's resize does not
        # reproduce, and the model turns those 1/255 steps into mattes 3% of whose pixels moved by more
        # than a 10-bit step; in float both devices agree to ~1e-6 (+1.6 ms per 720p frame measured).
        x = to_float_rgb(rgb)
        if not spec.native:
            x = resize_batch(x, self.input_size, interpolation="bilinear")
        if spec.color == "BGR":
            x = x[..., ::-1]
        x = (x - xp.float32(spec.mean)) * xp.float32(1.0 / spec.std)
        if spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return xp.ascontiguousarray(x, dtype=xp.float32)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Model input tensor -> [N,h,w] float32 0..1 at the model's resolution."""
        chunks = [tensor] if self.max_batch is None else [tensor[i:i + 1] for i in range(tensor.shape[0])]
        outs = []
        for chunk in chunks:
            (raw,) = self.session.run([self.spec.output_name], {self.spec.input_name: chunk})
            outs.append(raw)
        raw = np.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]
        matte = self._squeeze(raw)
        if self.spec.output_kind == "logit":
            matte = 1.0 / (1.0 + np.exp(-matte))
        return np.clip(matte, 0.0, 1.0).astype(np.float32, copy=False)

    def _squeeze(self, raw: np.ndarray) -> np.ndarray:
        if raw.ndim == 4:
            channel_axis = 1 if self.spec.layout == "NCHW" else 3
            if raw.shape[channel_axis] != 1:
                raise ModelError(f"{self.model_path}: output {self.spec.output_name!r} has shape {raw.shape}, "
                                 "expected one channel")
            return raw[:, 0] if channel_axis == 1 else raw[..., 0]
        if raw.ndim == 3:
            return raw
        raise ModelError(f"{self.model_path}: output {self.spec.output_name!r} has shape {raw.shape}, "
                         "expected [N,1,H,W] or [N,H,W,1]")

    def segment(self, rgb: np.ndarray, state=None, *, size: Literal["frame", "model"] = "frame",
                with_foreground: bool = False):
        """-> (alpha [N,H,W] float32, state), or (alpha, foreground [N,H,W,3] float32 0..1 or None,
        state) with_foreground. Per-frame models pass the state through (None); recurrent models
        take their RecurrentState (None = start of a shot) and return the next one."""
        if size not in ("frame", "model"):
            raise InputError(f"size must be 'frame' or 'model', got {size!r}")
        if get_array_module(rgb) is not np:
            matte, foreground, state = self._segment_device(rgb, state)
            if size == "frame":
                matte = resize_batch(matte, rgb.shape[1:3], interpolation="bilinear")
            return (matte, foreground, state) if with_foreground else (matte, state)
        if self.recurrent:
            matte, foreground, state = self._run_recurrent(rgb, state)
        else:
            matte, foreground = self.infer(self.preprocess(rgb)), None
        if size == "frame":
            matte = resize_batch(matte, rgb.shape[1:3], interpolation="bilinear")
        return (matte, foreground, state) if with_foreground else (matte, state)

    def _run_recurrent(self, rgb: np.ndarray, state: Optional[RecurrentState]):
        rec = self.spec.recurrent
        x = self.preprocess(rgb)
        h, w = rgb.shape[1:3]
        ratio = auto_downsample_ratio(h, w) if self.downsample_ratio == "auto" else self.downsample_ratio
        # A zero state at the start of a shot, broadcast by the model: [1,1,1,C] in NHWC graphs, [1,C,1,1] in
        # NCHW ones (the official fp32 RVM refuses [1,1,1,C]: "invalid expand shape").
        zero = (lambda c: (1, c, 1, 1)) if self.spec.layout == "NCHW" else (lambda c: (1, 1, 1, c))
        tensors = state.tensors if state is not None else tuple(np.zeros(zero(c), np.float32) for c in rec.channels)
        names = [self.spec.output_name, *([self.spec.foreground_output] if self.spec.foreground_output else []),
                 *rec.states_out]
        mattes, foregrounds = [], []
        for i in range(x.shape[0]):  # frames of one video depend on each other: strictly in order
            feeds = {self.spec.input_name: x[i:i + 1], **dict(zip(rec.states_in, tensors, strict=False))}
            if rec.ratio_input:
                # rank 1: the official fp32 RVM wants [1]; the converted one takes [] and [1] alike
                feeds[rec.ratio_input] = np.full((1,), ratio, np.float32)
            outs = self.session.run(names, feeds)
            mattes.append(self._squeeze(outs[0]))
            if self.spec.foreground_output:
                foregrounds.append(outs[1])
            tensors = tuple(outs[-len(rec.states_out):])
        matte = np.clip(np.concatenate(mattes), 0.0, 1.0).astype(np.float32, copy=False)
        foreground = None
        if foregrounds:
            fg = np.concatenate(foregrounds)
            foreground = np.clip(fg if self.spec.layout == "NHWC" else fg.transpose(0, 2, 3, 1), 0.0, 1.0)
        return matte, foreground, RecurrentState(tensors)

    def __call__(self, rgb: np.ndarray, *, size: Literal["frame", "model"] = "frame") -> np.ndarray:
        return self.segment(rgb, size=size)[0]

    # ------------------------------------------------------------------------------ on a device
    # Frames that are already device arrays (CuPy on a GPU; the tests' stand-in) never come back to the
    # host: preprocessing runs on the device (kernels/_backend), ONNX Runtime reads and writes device
    # memory through I/O binding, and a recurrent model's state stays there as ONNX Runtime values.

    def _bind_run(self, inputs: dict, outputs: list) -> list:
        """Run the session on device buffers: inputs are device arrays (bound by pointer) or ONNX
        Runtime values; outputs are allocated by ONNX Runtime on the device -> list of OrtValues."""
        import onnxruntime as ort

        device = self.device
        binding = self.session.io_binding()
        for name, value in inputs.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_input(name, device.ort_device, device.index, np.float32, tuple(value.shape),
                                   device.pointer(value))
        for name in outputs:
            binding.bind_output(name, device.ort_device, device.index)
        if device.ort_device == "cuda":
            import cupy

            cupy.cuda.get_current_stream().synchronize()  # the inputs' kernels are done before ORT reads them
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # the outputs are complete before CuPy kernels on another stream read them
        return binding.get_outputs()

    def _device_array(self, value):
        """An ONNX Runtime output value -> a device array of our own (one device-to-device copy)."""
        view = self.device.wrap(value.data_ptr(), tuple(value.shape()), np.float32, value)
        return view.copy()

    def _matte_device(self, raw):
        xp = get_array_module(raw)
        if raw.ndim == 4:
            channel_axis = 1 if self.spec.layout == "NCHW" else 3
            if raw.shape[channel_axis] != 1:
                raise ModelError(f"{self.model_path}: output {self.spec.output_name!r} has shape {raw.shape}, "
                                 "expected one channel")
            raw = raw[:, 0] if channel_axis == 1 else raw[..., 0]
        if self.spec.output_kind == "logit":
            raw = 1.0 / (1.0 + xp.exp(-raw))
        return xp.clip(raw, 0.0, 1.0).astype(xp.float32)

    def _ratio_value(self, ratio: float):
        """The downsample ratio as a device value, made once per ratio (not copied per frame)."""
        import onnxruntime as ort

        value = self._ratio_values.get(ratio)
        if value is None:
            value = ort.OrtValue.ortvalue_from_numpy(np.full((1,), ratio, np.float32), self.device.ort_device,
                                                     self.device.index)
            self._ratio_values[ratio] = value
        return value

    def _segment_device(self, rgb, state):
        xp = get_array_module(rgb)
        spec = self.spec
        x = self.preprocess(rgb)
        if not self.recurrent:
            step = x.shape[0] if self.max_batch is None else 1
            mattes = []
            for i in range(0, x.shape[0], step):
                (raw,) = self._bind_run({spec.input_name: x[i:i + step]}, [spec.output_name])
                mattes.append(self._matte_device(self._device_array(raw)))
            return (mattes[0] if len(mattes) == 1 else xp.concatenate(mattes)), None, state
        rec = spec.recurrent
        h, w = rgb.shape[1:3]
        ratio = auto_downsample_ratio(h, w) if self.downsample_ratio == "auto" else self.downsample_ratio
        if state is not None:
            tensors = state.tensors
        else:
            zero = (lambda c: (1, c, 1, 1)) if spec.layout == "NCHW" else (lambda c: (1, 1, 1, c))
            tensors = tuple(xp.zeros(zero(c), xp.float32) for c in rec.channels)
        names = [spec.output_name, *([spec.foreground_output] if spec.foreground_output else []), *rec.states_out]
        mattes, foregrounds = [], []
        for i in range(x.shape[0]):  # strictly in order: each frame's state feeds the next
            feeds = {spec.input_name: x[i:i + 1], **dict(zip(rec.states_in, tensors, strict=True))}
            if rec.ratio_input:
                feeds[rec.ratio_input] = self._ratio_value(float(ratio))
            outs = self._bind_run(feeds, names)
            mattes.append(self._matte_device(self._device_array(outs[0])))
            if spec.foreground_output:
                foregrounds.append(self._device_array(outs[1]))
            tensors = tuple(outs[-len(rec.states_out):])  # ONNX Runtime values, kept on the device
        matte = mattes[0] if len(mattes) == 1 else xp.concatenate(mattes)
        foreground = None
        if foregrounds:
            fg = foregrounds[0] if len(foregrounds) == 1 else xp.concatenate(foregrounds)
            foreground = xp.clip(fg if spec.layout == "NHWC" else fg.transpose(0, 2, 3, 1), 0.0, 1.0)
        return matte, foreground, RecurrentState(tensors)
