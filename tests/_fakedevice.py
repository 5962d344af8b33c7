"""A stand-in GPU for CPU tests: arrays that live "on the device" and refuse, as CuPy's do, to become
NumPy arrays implicitly, and a Device that counts every explicit crossing.

    dev = FakeDevice()
    d = dev.upload(host)            # counted upload; d is a FakeArray
    np.asarray(d)                   # TypeError, as with CuPy (also float(d), bool(d), d.item(), d.tolist())
    h = dev.download(d)             # counted download
    dev.transfers                   # Counter: upload, download, side_up, side_down, and "implicit"

Arithmetic, NumPy functions (through the array-function protocol), indexing, and scipy.ndimage (through
the backend this module hands to bgvid.kernels) all work on FakeArrays and return FakeArrays. A NumPy
array that meets a FakeArray anywhere (an operand, xp.asarray(np_array)) is an implicit upload: counted
under "implicit", which the tests require to stay at zero. ONNX Runtime sees the fake device's memory
as CPU memory, so I/O binding runs for real on the CPU provider with the same code as on CUDA.
"""

from __future__ import annotations

import threading
import types
from collections import Counter

import numpy as np
import scipy.ndimage

from bgvid.device import Device
from bgvid.kernels import Backend

_TRACK = threading.local()


class ImplicitTransfer(TypeError):
    pass


def _wrap(x, cls):
    """NumPy results -> arrays of the device class `cls` (scalars too: a 0-d device array, as CuPy)."""
    if isinstance(x, np.ndarray):
        return cls(x)
    if isinstance(x, np.generic):
        return cls(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v, cls) for v in x)
    if isinstance(x, list):
        return [_wrap(v, cls) for v in x]
    return x


def _unwrap(x, counter=None):
    if isinstance(x, FakeArray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0 and x.size > 16 and counter is not None:
        counter["implicit"] += 1  # a host array meeting device arrays: CuPy would copy it (or refuse)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, counter) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, counter) for k, v in x.items()}
    return x


class FakeArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A NumPy array behind a wall: usable through the array protocols, never silently a NumPy array."""

    device: "FakeDevice"  # set on the class by FakeDevice

    def __init__(self, array: np.ndarray):
        self._a = array

    # ---- what CuPy refuses -----------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise ImplicitTransfer("implicit conversion of a device array to NumPy (use an explicit download)")

    def __float__(self):
        raise ImplicitTransfer("float() of a device array: a hidden device->host transfer")

    def __int__(self):
        raise ImplicitTransfer("int() of a device array: a hidden device->host transfer")

    def __index__(self):
        raise ImplicitTransfer("a device array used as a Python index: a hidden device->host transfer")

    def __bool__(self):
        raise ImplicitTransfer("bool() of a device array: a hidden device->host transfer")

    def item(self, *args):
        raise ImplicitTransfer("item() of a device array: a hidden device->host transfer")

    def tolist(self):
        raise ImplicitTransfer("tolist() of a device array: a hidden device->host transfer")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ---- the array protocols ---------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        counter = self.device.transfers
        out = getattr(ufunc, method)(*_unwrap(inputs, counter), **_unwrap(kwargs, counter))
        if "out" in kwargs:
            return kwargs["out"][0] if isinstance(kwargs["out"], tuple) and len(kwargs["out"]) == 1 else kwargs["out"]
        return _wrap(out, type(self))

    def __array_function__(self, func, types_, args, kwargs):
        counter = self.device.transfers
        return _wrap(func(*_unwrap(args, counter), **_unwrap(kwargs, counter)), type(self))

    # ---- ndarray surface ---------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: type(self)(self._a.T))
    flags = property(lambda self: self._a.flags)

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"FakeArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, self.device.transfers)], type(self))

    def __setitem__(self, key, value):
        self._a[_unwrap(key, self.device.transfers)] = _unwrap(value, self.device.transfers)

    def __getattr__(self, name):
        # methods such as astype, reshape, sum, copy, clip, transpose, view, any, all, max, mean ...
        if name.startswith("__"):  # never __array_interface__ & co.: NumPy would read the memory directly
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr, type(self))
        counter, cls = self.device.transfers, type(self)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, counter), **_unwrap(kwargs, counter)), cls)

        return method

    def get(self):
        """CuPy's explicit download (counted as one)."""
        self.device.transfers["download"] += 1
        return self._a.copy()


class _Module(types.SimpleNamespace):
    """A module whose functions take and give FakeArrays (NumPy's, or scipy.ndimage's)."""

    def __init__(self, target, device: "FakeDevice"):
        super().__init__()
        self._target, self._device = target, device

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr) or isinstance(attr, type):
            return attr
        counter = self._device.transfers

        def call(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, counter), **_unwrap(kwargs, counter)), self._device.array_type)

        return call


class _FakeNumpy(_Module):
    def asarray(self, x, dtype=None):
        if isinstance(x, np.ndarray) and x.ndim > 0 and x.size > 16:
            self._device.transfers["implicit"] += 1  # cupy.asarray(np_array): an upload nobody counted
        return _wrap(np.asarray(_unwrap(x), dtype=dtype), self._device.array_type)

    def asnumpy(self, x):
        self._device.transfers["download"] += 1
        return _unwrap(x).copy()


class FakeDevice(Device):
    """Device whose arrays are FakeArrays; counts upload/download/side crossings and implicit ones."""

    is_cpu = False
    name = "fake:0"
    ort_device = "cpu"

    def __init__(self):
        super().__init__()
        self.transfers = Counter()
        cls = type("FakeArrayOn", (FakeArray,), {"device": self})
        self.array_type = cls
        self.np = _FakeNumpy(np, self)
        self.ndi = _Module(scipy.ndimage, self)
        device = self

        def to_host(x, side=False):
            return device.download(x, side=side)

        def to_device(x, side=False):
            return device.upload(x, side=side)

        self.backend = Backend(self.np, self.ndi, "fake", transfer=(to_host, to_device))
        self.np.bgvid_backend = self.backend
        cls.__bgvid_array_module__ = self.np
        self.branches: Counter = Counter()  # stages record their device branch here (tests assert on it)

    @property
    def xp(self):
        return self.np

    def upload(self, host, *, side=False):
        host = np.ascontiguousarray(host)
        self._count("side_up" if side else "upload", host.nbytes)
        return self.array_type(host.copy())

    def download(self, array, *, side=False):
        self._count("side_down" if side else "download", array.nbytes)
        return array._a.copy()

    def pointer(self, array) -> int:
        return int(array._a.ctypes.data)

    def wrap(self, pointer, shape, dtype, owner):
        host = Device.wrap(self, pointer, shape, dtype, owner)
        return self.array_type(host)
