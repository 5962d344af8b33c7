"""The device check's smoke stage: every piece --device cuda needs, one by one, with a clear message for
the first one missing (imports, CUDA, ONNX Runtime's CUDA provider, one CuPy kernel, one model call)."""

from __future__ import annotations

import sys
import time


def main() -> int:
    t0 = time.perf_counter()

    def ok(what: str) -> None:
        print(f"  ok  {what}  ({time.perf_counter() - t0:.1f} s)", flush=True)

    try:
        import av
        import numpy as np
        import onnxruntime

        import bgvid
        from bgvid.device import CudaDevice, cuda_status, gpu_report, resolve_device
        ok(f"imports: bgvid {bgvid.__version__}, PyAV {av.__version__}, onnxruntime {onnxruntime.__version__}")
    except Exception as exc:  # noqa: BLE001 - the message is the product here
        print(f"MISSING: an import failed: {type(exc).__name__}: {exc}")
        return 1
    usable, why = cuda_status()
    if not usable:
        print(f"MISSING: CUDA through CuPy: {why}")
        return 1
    ok("CuPy sees a CUDA device")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        print(f"MISSING: ONNX Runtime's CUDA provider (this onnxruntime: {onnxruntime.get_available_providers()}); "
              "install onnxruntime-gpu and not onnxruntime")
        return 1
    for line in gpu_report():
        print("      " + line)
    print("      " + resolve_device("cuda").reason)
    import cupy

    from bgvid.kernels import resize_batch

    frame = cupy.asarray(np.random.default_rng(0).integers(0, 255, (1, 1080, 1920, 3), dtype=np.uint8))
    small = resize_batch(frame, (256, 455))
    cupy.cuda.get_current_stream().synchronize()
    ok(f"one CuPy kernel: resize -> {small.shape} {type(small).__module__}")
    from bgvid.models.segmenter import Segmenter

    try:
        seg = Segmenter.from_name("selfie", provider="cuda", device=CudaDevice(0), pull=False)
    except Exception as exc:  # noqa: BLE001
        print(f"MISSING: the selfie model in the cache (BGVID_HOME): {exc}")
        return 1
    alpha, _ = seg.segment(frame, None, size="model")
    cupy.cuda.get_current_stream().synchronize()
    ok(f"one model call on the GPU through I/O binding: {alpha.shape}, mean {float(alpha.mean()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
