"""Shared fixtures. Nothing here downloads: models come from the cache that `.ci/run` fills with
`bgvid models pull`; tests that need one skip with the reason when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = ROOT.parent / "shared" / "media"
SHARED_REFERENCE = ROOT.parent / "shared" / "reference"


def _gpu_required() -> bool:
    return os.environ.get("BGVID_REQUIRE_GPU") == "1"


@pytest.fixture
def media() -> Path:
    """../shared/media (real footage and alpha); skips where the folder is absent."""
    if not SHARED_MEDIA.is_dir():
        pytest.skip(f"real footage not found at {SHARED_MEDIA}")
    return SHARED_MEDIA


@pytest.fixture
def reference_dir() -> Path:
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(f"reference outputs not found at {SHARED_REFERENCE}")
    return SHARED_REFERENCE


@pytest.fixture
def model_source():
    """model_source(name) -> bytes of the verified source file (.tflite / original .onnx) from the
    model cache; skips when that model has not been pulled (`bgvid models pull NAME`)."""
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    root = _cache.cache_root()  # the user's cache, even if a test later points BGVID_HOME elsewhere

    def get(name: str) -> bytes:
        spec = _catalog.get_model(name)
        path = _cache.cached_source(spec, root)
        if path is None:
            pytest.skip(f"model {name!r} not in the cache ({_cache.cache_root()}): run `bgvid models pull {name}`")
        return path.read_bytes()

    return get


@pytest.fixture
def model_path():
    """model_path(name) -> Path of the converted .onnx in the cache; skips when not pulled."""
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    root = _cache.cache_root()

    def get(name: str) -> Path:
        spec = _catalog.get_model(name)
        path = _cache.cached_model(spec, root)
        if path is None:
            pytest.skip(f"model {name!r} not in the cache ({_cache.cache_root()}): run `bgvid models pull {name}`")
        return path

    return get
