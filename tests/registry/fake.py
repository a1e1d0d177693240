"""Faults a real registry does not make on demand: an in-process fake registry, and a proxy that stalls.

``FakeRegistry`` serves the images given to it (``add``) on 127.0.0.1, with
switches for a truncated blob body, 429 with Retry-After, a server that
ignores Range, blob redirects to another host, and basic auth; it records
every request.  ``StallingProxy`` forwards to a real registry and stops
forwarding once a blob response has passed a number of bytes, so that the
test can stop the registry in the middle of that blob.
"""

from __future__ import annotations

import base64
import http.server
import re
import socket
import threading
from dataclasses import dataclass, field

_BLOB = re.compile(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$")
_MANIFEST = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeRegistry:
    auth: tuple[str, str] | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # "repo:ref": (media type, body)
    requests: list[Seen] = field(default_factory=list)
    truncate: dict[str, int] = field(default_factory=dict)  # blob digest: bytes sent before the cut (once)
    throttle: list[str] = field(default_factory=list)  # Retry-After values of the next 429s to manifest GETs
    ignore_range: bool = False
    redirect_blobs_to: str | None = None  # "http://host:port": blob GETs answered 307 to there

    def __post_init__(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, repo: str, tag: str, config: bytes, layers: list[bytes], manifest: bytes, media_type: str) -> None:
        from .conftest import sha256

        for blob in (config, *layers):
            self.blobs[sha256(blob)] = blob
        self.manifests[f"{repo}:{tag}"] = self.manifests[f"{repo}:{sha256(manifest)}"] = (media_type, manifest)

    def seen(self, method: str, path_part: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:  # noqa: N802
                fake.requests.append(Seen(self.command, self.path, dict(self.headers)))
                if fake.auth and self.headers.get("Authorization") != _basic(*fake.auth):
                    return self._answer(401, b"{}", {"WWW-Authenticate": 'Basic realm="fake"'})
                if self.path == "/v2/":
                    return self._answer(200, b"{}")
                if (blob := _BLOB.match(self.path)) is not None:
                    return self._blob(blob.group(1), blob.group(2), head)
                if (manifest := _MANIFEST.match(self.path)) is not None:
                    if fake.throttle and not head:
                        return self._answer(429, b"{}", {"Retry-After": fake.throttle.pop(0)})
                    found = fake.manifests.get(f"{manifest.group(1)}:{manifest.group(2)}")
                    if found:
                        return self._answer(200, found[1], {"Content-Type": found[0]}, head=head)
                self._answer(404, b'{"errors": [{"code": "NOT_FOUND", "message": "not here"}]}')

            def _blob(self, repo: str, digest: str, head: bool) -> None:
                if fake.redirect_blobs_to and not head:
                    return self._answer(307, b"", {"Location": f"{fake.redirect_blobs_to}/v2/{repo}/blobs/{digest}"})
                data = fake.blobs.get(digest)
                if data is None:
                    return self._answer(404, b"{}")
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged and not fake.ignore_range:
                    start = int(ranged.group(1))
                    headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                    return self._answer(206, data[start:], headers, head=head, cut=fake.truncate.pop(digest, None))
                self._answer(200, data, head=head, cut=fake.truncate.pop(digest, None))

            def _answer(
                self,
                status: int,
                body: bytes,
                headers: dict | None = None,
                *,
                head: bool = False,
                cut: int | None = None,
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.end_headers()
                if head:
                    return
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])  # then the connection is cut
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
                pass

        return Handler


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class StallingProxy:
    """Forwards 127.0.0.1:port to a registry; stalls a connection whose blob response passed ``after`` bytes.

    ``stalled`` is set when that happens; from then on the proxy forwards
    nothing more on that connection until the upstream side closes.
    """

    def __init__(self, upstream_port: int, blob: str, after: int) -> None:
        self.upstream_port = upstream_port
        self.blob = blob
        self.after = after
        self.stalled = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # accept() wakes up to see close()
        self._closing = threading.Event()
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            state = {"asked": False, "stalled": False}  # this connection asked for the blob; it is the stalled one
            threading.Thread(target=self._pipe, args=(client, upstream, state, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, state, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, state: dict, downstream: bool) -> None:
        passed = 0
        try:
            while data := src.recv(65536):
                if not downstream and f"/blobs/{self.blob}".encode() in data:
                    state["asked"] = True
                if downstream and state["asked"] and not self.stalled.is_set():
                    passed += len(data)
                    if passed >= self.after:
                        state["stalled"] = True
                        self.stalled.set()
                if state["stalled"]:
                    continue  # what the registry sends is dropped until it goes away
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        self._listener.close()
        for sock in self._open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
