"""A fake npm registry and PyPI on 127.0.0.1 for the fetch tests, and a forward proxy.

FakeRegistry serves what the real ones do, shaped the same way:
    GET /<package>/<version>        npm version metadata: {"dist": {"tarball", "integrity", "shasum"}}
    GET /<package>/-/<file>.tgz     the tarball
    GET /pypi/<project>/json        PyPI's JSON API: {"releases": {version: [{filename, url, digests, size}]}}
    GET /files/<filename>           a wheel
with Range support (206 + Content-Range), a log of every request, and faults on request: a status
code for the next N requests, a connection dropped after N bytes, Range ignored, a delay.
Everything it serves is built by the test around real model files; nothing comes from the network.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import io
import json
import socket
import tarfile
import threading
import time
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Fault:
    status: Optional[int] = None  # answer this code instead
    drop_after: Optional[int] = None  # send this many body bytes, then cut the connection
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a range
    delay: float = 0.0  # seconds before answering
    times: int = 1  # for how many requests (then the path behaves again)


@dataclass
class Request:
    method: str
    path: str
    range: Optional[str]
    via_proxy: bool = False


@dataclass
class FakeRegistry:
    routes: dict = field(default_factory=dict)  # path -> (bytes, content type)
    faults: dict = field(default_factory=dict)  # path -> [Fault, ...]
    log: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "FakeRegistry":
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                with registry.lock:
                    registry.log.append(Request("GET", path, self.headers.get("Range")))
                    faults = registry.faults.get(path) or []
                    fault = faults[0] if faults else None
                    if fault is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            faults.pop(0)
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and fault.status:
                    self._send(fault.status, b'{"error": "fault"}', "application/json")
                    return
                if path not in registry.routes:
                    self._send(404, b'{"error": "Not found"}', "application/json")
                    return
                body, ctype = registry.routes[path]
                start = 0
                rng = self.headers.get("Range")
                if rng and not (fault and fault.ignore_range):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
                        return
                    span = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                    self._send(206, body[start:], ctype, span, drop_after=fault.drop_after if fault else None)
                    return
                self._send(200, body, ctype, {"Accept-Ranges": "bytes"}, drop_after=fault.drop_after if fault else None)

            def _send(self, code, body, ctype, headers=None, drop_after=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if drop_after is not None:
                    self.wfile.write(body[:drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # ---- content ----
    def add_npm(self, package: str, version: str, tarball: bytes, *, integrity: Optional[str] = None,
                tarball_url: Optional[str] = None) -> str:
        """Serve package@version's metadata and tarball; returns the tarball's path."""
        path = f"/{package}/-/{package.split('/')[-1]}-{version}.tgz"
        self.routes[path] = (tarball, "application/octet-stream")
        meta = {"name": package, "version": version, "dist": {
            "tarball": tarball_url or self.url + urllib.parse.quote(path),
            "integrity": integrity or sri(tarball),
            "shasum": hashlib.sha1(tarball).hexdigest(),
        }}
        self.routes[f"/{package}/{version}"] = (json.dumps(meta).encode(), "application/json")
        return path

    def add_pypi(self, project: str, version: str, filename: str, wheel: bytes, *,
                 sha256: Optional[str] = None) -> str:
        path = f"/files/{filename}"
        self.routes[path] = (wheel, "application/octet-stream")
        doc = {"info": {"name": project}, "releases": {version: [{
            "filename": filename, "url": self.url + path, "size": len(wheel), "packagetype": "bdist_wheel",
            "digests": {"sha256": sha256 or hashlib.sha256(wheel).hexdigest()},
        }]}}
        self.routes[f"/pypi/{project}/json"] = (json.dumps(doc).encode(), "application/json")
        return path

    def fault(self, path: str, **kw) -> None:
        self.faults.setdefault(path, []).append(Fault(**kw))

    def gets(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.log if r.path == path]


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def npm_tarball(members: dict[str, bytes], pad: int = 0) -> bytes:
    """An npm-shaped .tgz; pad adds an incompressible member of that many bytes."""
    import os

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {**members, **({"package/padding.bin": os.urandom(pad)} if pad else {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wheel(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


class FakeProxy:
    """A forward HTTP proxy (absolute-URI GETs) that records what passed through it."""

    def __init__(self):
        self.log: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.log.append(self.path)
                target = urllib.parse.urlsplit(self.path)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                conn.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
