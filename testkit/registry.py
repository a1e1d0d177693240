"""Real registries for the pull/push tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1.

``Registry(parent, auth=..., tls=...)`` is a context manager.  On entry it makes
a directory of its own under parent (config.yml, storage, certificates, password
file, log), picks a free port of 127.0.0.1 and runs ``docker-registry serve``
as a child in a session of its own, then waits until ``GET /v2/`` answers (200,
or 401 with an auth).  On exit, also after a failure or Ctrl-C (deferred while it
runs), the child is stopped by its pid (SIGTERM, SIGKILL after STOP_TIMEOUT), the
token server shut down and the directory deleted.  ``RegistryUnavailable`` says
why a registry cannot run (the tests skip with it).

Auth kinds: ``Auth.NONE``; ``Auth.BASIC`` (htpasswd, bcrypt cost 4, user
``tester`` and a random password); ``Auth.TOKEN`` (distribution's token auth:
the registry answers 401 ``Bearer realm=...,service=...``, and a ``TokenServer``
thread of ours on 127.0.0.1 hands out RS256 JWTs for the same user and password).
``tls=True`` serves HTTPS with a server certificate (IP 127.0.0.1, DNS localhost)
from a CA made for this registry: ``ca_path``, ``install_ca(certs_dir)``.
Certificates and keys are made with the openssl CLI, passwords with htpasswd.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from overlayctl.kernel import _libc
from testkit.dockerd import signals_deferred

REGISTRY_BIN = "/usr/bin/docker-registry"  # Debian 12's docker-registry: distribution 2.8.2
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
USERNAME = "tester"
TOKEN_SERVICE = "overlayctl-test-registry"  # the token's "aud" and the challenge's service=
TOKEN_ISSUER = "overlayctl-test-token-server"  # the token's "iss"
TOKEN_LIFETIME = 300  # seconds


class RegistryUnavailable(Exception):
    """A registry cannot run here; the message says why."""


class Auth(enum.Enum):
    NONE = "none"
    BASIC = "htpasswd"
    TOKEN = "token"


def free_port() -> int:
    """A port of 127.0.0.1 free right now (the registry start retries when another takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(*argv: str, stdin: bytes | None = None) -> bytes:
    """Run openssl or htpasswd; its stdout, or RegistryUnavailable with its last stderr line."""
    if shutil.which(argv[0]) is None:
        raise RegistryUnavailable(f"{argv[0]} is not installed (make deps installs it)")
    done = subprocess.run(argv, input=stdin or b"", capture_output=True, check=False, timeout=60)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit {done.returncode}"]
        raise RegistryUnavailable(f"{argv[0]} {argv[1]}: {lines[-1]}")
    return done.stdout


# Our own openssl config: no dependence on the host's openssl.cnf and its default extensions.
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[signer]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
"""


def make_certificate(
    out: Path, name: str, *, ext: str, subject: str, ca: tuple[Path, Path] | None = None, rsa: bool = False
) -> tuple[Path, Path]:
    """A new key and its certificate (valid 2 days), self-signed or by ca=(cert, key); (cert, key).

    ext names a section of _OPENSSL_CNF: "ca", "server" or "signer".  Keys are
    P-256, or RSA 2048 with rsa=True (the token signer: RS256).
    """
    cnf = out / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    cert, key = out / f"{name}.crt", out / f"{name}.key"
    newkey = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    signer = ["-CA", str(ca[0]), "-CAkey", str(ca[1])] if ca else []
    req = ["req", "-x509", "-config", str(cnf), "-extensions", ext, "-noenc", "-days", "2", "-subj", subject]
    _tool("openssl", *req, *newkey, "-keyout", str(key), "-out", str(cert), *signer)
    return cert, key


def libtrust_key_id(cert: Path) -> str:
    """The key ID distribution 2.8 gives a certificate's key (libtrust ``keyIDFromCryptoKey``).

    SHA-256 of the DER SubjectPublicKeyInfo, cut to 240 bits, base32 in 12
    colon-separated groups of 4.  A token whose header has ``kid`` and no
    ``x5c`` is checked with the rootcertbundle key of that ID.
    """
    spki = _tool("openssl", "x509", "-in", str(cert), "-noout", "-pubkey")
    der = _tool("openssl", "pkey", "-pubin", "-outform", "DER", stdin=spki)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def parse_scope(scope: str) -> dict:
    """``repository:name:pull,push`` as a token ``access`` entry (the name may hold a ``:port``)."""
    kind, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return {"type": kind, "name": name, "actions": actions.split(",")}


class TokenServer:
    """The registry's token issuer: ``GET /token?service=..&scope=..`` on 127.0.0.1, in a thread.

    Basic auth with the registry's user and password gets every action the
    scopes ask for; no Authorization gets pull only, and only with
    anonymous_pull; anything else is 401.  The answer is Docker's
    ``{"token", "access_token", "expires_in", "issued_at"}``.  ``requests``
    lists what was asked: (user or None, service, [scope, ...]).
    """

    def __init__(self, out: Path, username: str, password: str, *, anonymous_pull: bool = False) -> None:
        self.username, self.password, self.anonymous_pull = username, password, anonymous_pull
        self.cert, self.key = make_certificate(
            out, "token-signer", ext="signer", subject="/CN=overlayctl test token signer", rsa=True
        )
        self.cert_der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        self.key_id = libtrust_key_id(self.cert)
        self.service, self.issuer = TOKEN_SERVICE, TOKEN_ISSUER
        self.requests: list[tuple[str | None, str, list[str]]] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="token-server", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def issue(
        self,
        subject: str,
        access: list[dict],
        *,
        key_ref: str = "x5c",
        audience: str | None = None,
        lifetime: int = TOKEN_LIFETIME,
    ) -> str:
        """A signed JWT granting access; key_ref "x5c" (the certificate chain) or "kid" (its libtrust ID)."""
        header = {"typ": "JWT", "alg": "RS256"}
        header |= {"x5c": [base64.b64encode(self.cert_der).decode()]} if key_ref == "x5c" else {"kid": self.key_id}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service if audience is None else audience,  # 2.8 wants a string, not a list
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signed = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = _tool("openssl", "dgst", "-sha256", "-sign", str(self.key), stdin=signed.encode())
        return f"{signed}.{_b64url(signature)}"

    def _grant(self, authorization: str | None, scopes: list[str]) -> tuple[str | None, list[dict]] | None:
        """(subject, access) for a request, None when it is refused (also for a malformed scope)."""
        try:
            access = [parse_scope(s) for s in scopes]
        except ValueError:
            return None
        if authorization is None:
            if not self.anonymous_pull:
                return None
            return None, [dict(a, actions=[x for x in a["actions"] if x == "pull"]) for a in access]
        kind, _, value = authorization.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            return None
        if not (secrets.compare_digest(user, self.username) and secrets.compare_digest(password, self.password)):
            return None
        return user, access

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/token":
                    self._answer(404, {"error": "not found"})
                    return
                query = urllib.parse.parse_qs(url.query)
                scopes = [s for value in query.get("scope", []) for s in value.split()]
                service = query.get("service", [""])[0]
                grant = server._grant(self.headers.get("Authorization"), scopes)
                server.requests.append((grant[0] if grant else None, service, scopes))
                if grant is None:
                    self._answer(401, {"details": "bad or missing credentials"}, realm=True)
                    return
                token = server.issue(grant[0] or "", grant[1])
                issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                body = {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME, "issued_at": issued}
                self._answer(200, body)

            def _answer(self, status: int, body: dict, *, realm: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if realm:
                    self.send_header("WWW-Authenticate", 'Basic realm="overlayctl test token server"')
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
                pass

        return Handler


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the tests' process dies, even by SIGKILL (prctl(2) PR_SET_PDEATHSIG)."""
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


class Registry:
    """A docker-registry of its own on 127.0.0.1; a context manager (see the module docstring).

    Attributes once entered: ``host`` ("127.0.0.1:PORT", the reference's
    registry part), ``url`` ("http(s)://127.0.0.1:PORT"), ``port``,
    ``username``/``password`` (None without auth), ``ca_path`` (tls only),
    ``token_server`` (Auth.TOKEN only), ``dir``, ``storage``, ``log_path``.
    """

    def __init__(
        self,
        parent: str | Path | None = None,
        *,
        auth: Auth = Auth.NONE,
        tls: bool = False,
        username: str = USERNAME,
        password: str | None = None,
        anonymous_pull: bool = False,
    ) -> None:
        self.parent, self.auth, self.tls, self.anonymous_pull = parent, auth, tls, anonymous_pull
        self.username = username if auth is not Auth.NONE else None
        self.password = (password or secrets.token_urlsafe(12)) if auth is not Auth.NONE else None
        self.dir: Path | None = None
        self.port = 0
        self.ca_path: Path | None = None
        self.token_server: TokenServer | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def kind(self) -> str:
        """The kind in a word, for ids and messages: plain, htpasswd, token, tls, htpasswd+tls, token+tls."""
        name = {Auth.NONE: "plain", Auth.BASIC: "htpasswd", Auth.TOKEN: "token"}[self.auth]
        return ("tls" if name == "plain" else f"{name}+tls") if self.tls else name

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def storage(self) -> Path:
        return self.dir / "storage"

    @property
    def log_path(self) -> Path:
        return self.dir / "registry.log"

    @property
    def credentials(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username else None

    def install_ca(self, certs_dir: str | Path) -> Path:
        """Copy the CA to ``<certs_dir>/127.0.0.1:PORT/ca.crt`` (certs.d layout of Docker and containers); its path."""
        assert self.ca_path is not None, f"a {self.kind} registry has no CA"
        target = Path(certs_dir) / self.host / "ca.crt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.ca_path, target)
        return target

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this registry's CA (only it)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        """A new http.client connection to the registry (HTTPS trusting its CA when tls)."""
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.ssl_context())
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Registry:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if not os.access(REGISTRY_BIN, os.X_OK):
            raise RegistryUnavailable(f"{REGISTRY_BIN} is not installed (make deps installs docker-registry)")
        self.dir = Path(tempfile.mkdtemp(prefix=f"registry-{self.kind}-", dir=self.parent))
        self.storage.mkdir()
        config = self._config()
        for attempt in range(3):  # another process may take the free port before the registry binds it
            self.port = free_port()
            config["http"]["addr"] = self.host
            if self._serve(config):
                return
            if "address already in use" not in self.log_text() or attempt == 2:
                raise RegistryUnavailable(f"docker-registry exited ({self.proc.returncode}): {self._error_line()}")

    def _config(self) -> dict:
        """config.yml as a dict (written as JSON, which YAML reads); the files it names are made here."""
        config: dict = {
            "version": "0.1",
            "log": {"level": "info", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                # Its purge of old uploads starts a goroutine per start; nothing here lives that long.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            # Without a secret each start logs a warning and makes one; upload state is HMAC'd with it.
            "http": {"addr": "", "secret": secrets.token_hex(16), "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if self.tls:
            ca_cert, ca_key = make_certificate(self.dir, "ca", ext="ca", subject="/CN=overlayctl test CA")
            cert, key = make_certificate(
                self.dir, "server", ext="server", subject="/CN=localhost", ca=(ca_cert, ca_key)
            )
            ca_key.unlink()  # nothing else is signed with it
            self.ca_path = ca_cert
            config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
        if self.auth is Auth.BASIC:
            path = self.dir / "htpasswd"
            _tool("htpasswd", "-c", "-i", "-B", "-C", "4", str(path), self.username, stdin=self.password.encode())
            config["auth"] = {"htpasswd": {"realm": "overlayctl-test", "path": str(path)}}
        elif self.auth is Auth.TOKEN:
            self.token_server = TokenServer(self.dir, self.username, self.password, anonymous_pull=self.anonymous_pull)
            config["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.token_server.cert),
                }
            }
        return config

    def _serve(self, config: dict) -> bool:
        """Start the child with config; True once /v2/ answers, False if it exited (RegistryUnavailable on timeout)."""
        config_path = self.dir / "config.yml"
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        # REGISTRY_* variables override the config file (REGISTRY_HTTP_ADDR...): none of the caller's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the tests, which stop it in order
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        want = 200 if self.auth is Auth.NONE else 401
        while True:
            if self.proc.poll() is not None:
                return False
            try:
                conn = self.connection(timeout=1)
                try:
                    conn.request("GET", "/v2/")
                    status = conn.getresponse().status
                finally:
                    conn.close()
                if status == want:
                    return True
                raise RegistryUnavailable(f"GET {self.url}/v2/ answered {status}, not {want}")
            except (OSError, http.client.HTTPException) as exc:
                if time.monotonic() > deadline:
                    raise RegistryUnavailable(
                        f"{self.url}/v2/ did not answer in {START_TIMEOUT:.0f} s: {exc}"
                    ) from None
            time.sleep(0.05)

    def _error_line(self) -> str:
        lines = [line for line in self.log_text().splitlines() if line.strip()]
        errors = [line for line in lines if "level=fatal" in line or "level=error" in line]
        return ((errors or lines or ["(empty log)"])[-1])[:300]

    def stop(self) -> None:
        """Stop the child by its pid: SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def start_again(self) -> None:
        """Start the stopped registry again: the same port, config and storage."""
        if not self._serve(json.loads((self.dir / "config.yml").read_text())):
            raise RegistryUnavailable(f"docker-registry exited ({self.proc.returncode}): {self._error_line()}")

    def close(self) -> None:
        """Stop the registry and the token server, delete the directory; safe to call twice."""
        with signals_deferred():
            self.stop()
            if self.token_server is not None:
                self.token_server.close()
                self.token_server = None
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
