"""An HTTP client of one registry's /v2/ API: TLS, plain HTTP for loopback, auth, retries.

urllib3 does the HTTP: thread-safe connection pools, streamed bodies,
timeouts.  Redirects of GET and HEAD are followed here, without the
``Authorization`` header when they lead to another host (blob downloads are
often redirected to object storage); 429 and 503 are waited out as their
``Retry-After`` asks, within the retry time.

- **TLS** is verified against the system's CAs plus
  ``/etc/overlayctl/certs.d/HOST:PORT/ca.crt`` (Docker's naming), with
  ``client.cert``/``client.key`` from there for mutual TLS.
- **Plain HTTP** is tried only for a loopback host (as Docker allows for
  127.0.0.0/8) or with ``insecure``, and only when the host does not speak TLS:
  a registry that speaks TLS is always verified.
- **Auth**: the ``/v2/`` challenge decides. Basic sends the stored
  credentials; Bearer fetches a token per set of scopes from the realm
  (with the credentials, when there are some) and fetches again once when a
  request is refused.
- Connection errors are retried with backoff for about 30 s.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidArgument, NotFound, RegistryError

#: Per-registry CA and client certificates, as Docker's /etc/docker/certs.d: HOST:PORT/ca.crt, client.cert, client.key.
CERTS_DIR = os.environ.get("OVERLAYCTL_CERTS_DIR", "/etc/overlayctl/certs.d")
#: overlayctl's own settings: {"insecure-registries": ["HOST:PORT", ...]} (plain HTTP allowed to them).
CONFIG_FILE = os.environ.get("OVERLAYCTL_CONFIG", "/etc/overlayctl/config.json")
#: Seconds of retrying a registry that cannot be reached.
RETRY_SECONDS = float(os.environ.get("OVERLAYCTL_REGISTRY_RETRY_SECONDS", "30"))
USER_AGENT = "overlayctl/0.1"
MAX_REDIRECTS = 5


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def configured_insecure(host: str, config_file: str = CONFIG_FILE) -> bool:
    """Whether overlayctl's config lists host among its insecure registries (as Docker's daemon.json)."""
    try:
        with open(config_file) as f:
            listed = json.load(f).get("insecure-registries") or []
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError) as exc:
        raise RegistryError(f"{config_file}: not a valid overlayctl config ({exc})") from None
    return host in listed


def _ssl_context(host: str, certs_dir: str) -> ssl.SSLContext:
    """A context that verifies the certificate and the host name, with the registry's own CA and client key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    directory = os.path.join(certs_dir, host)
    ca = os.path.join(directory, "ca.crt")
    if os.path.isfile(ca):
        context.load_verify_locations(cafile=ca)
    cert, key = os.path.join(directory, "client.cert"), os.path.join(directory, "client.key")
    if os.path.isfile(cert) and os.path.isfile(key):
        context.load_cert_chain(cert, key)
    return context


class RegistryClient:
    """Requests to one registry host, with its scheme, credentials and tokens worked out once."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        certs_dir: str = CERTS_DIR,
        credentials: Any = None,
        pool_size: int = 8,
        timeout: float = 60.0,
    ) -> None:
        import urllib3

        self.host = host
        self.insecure = insecure
        self.certs_dir = certs_dir
        self.credentials = credentials  # registry.credentials.Credentials or None
        self._urllib3 = urllib3
        self._ssl = _ssl_context(host, certs_dir)
        self._cas_loaded = False  # the system's CAs are loaded before the first HTTPS request
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_size,
            ssl_context=self._ssl,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
            retries=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._scheme: str | None = None
        self._challenge: Any = None  # registry.auth.Challenge of /v2/, or None when it asks none
        self._tokens: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    # -- the connection ---------------------------------------------------------------

    @property
    def base(self) -> str:
        if self._scheme is None:
            self.ping()
        return f"{self._scheme}://{self.host}"

    def ping(self) -> int:
        """GET /v2/ (choosing https or http, and learning the auth challenge); its status."""
        with self._lock:
            if self._scheme is None:
                self._scheme, response = self._first_contact()
                self._learn_challenge(response)
                return response.status
        response = self._send("GET", f"{self._scheme}://{self.host}/v2/")
        return response.status

    def _first_contact(self):
        urllib3 = self._urllib3
        if is_loopback(self.host):
            plain = self._plain_registry()
            if plain is not None:
                return "http", plain
        try:
            return "https", self._send("GET", f"https://{self.host}/v2/")
        except urllib3.exceptions.SSLError as exc:
            if not self._speaks_plain_http(exc):
                raise RegistryError(
                    f"{self.host}: TLS failed: {reason_of(exc)}",
                    hint=f"put the registry's CA certificate in {os.path.join(self.certs_dir, self.host, 'ca.crt')}",
                ) from None
        if not (self.insecure or is_loopback(self.host) or configured_insecure(self.host)):
            raise RegistryError(
                f"{self.host} does not speak TLS; plain HTTP is allowed only for loopback registries",
                hint=f"add --insecure, or list it under insecure-registries in {CONFIG_FILE}",
            )
        return "http", self._send("GET", f"http://{self.host}/v2/")

    def _plain_registry(self):
        """GET /v2/ over plain HTTP, once: the answer if a registry gave it (200 or 401), else None.

        Tried first on loopback, where plain HTTP is allowed: no TLS handshake
        to fail and no CA to load.  A TLS registry answers 400 (or hangs up),
        and is then verified as any other.
        """
        try:
            response = self._pool.request("GET", f"http://{self.host}/v2/", retries=False, timeout=5.0)
        except self._urllib3.exceptions.HTTPError:
            return None
        return response if response.status in (200, 401) else None

    @staticmethod
    def _speaks_plain_http(exc: Exception) -> bool:
        text = str(exc).lower()
        return any(
            mark in text for mark in ("wrong version number", "record layer failure", "http request", "unexpected eof")
        )

    def _send(self, method: str, url: str, **kwargs: Any):
        """One request, retried on connection errors with backoff (about RETRY_SECONDS in all)."""
        urllib3 = self._urllib3
        if url.startswith("https:") and not self._cas_loaded:
            self._ssl.load_default_certs()  # the system's CAs: parsing them takes about 20 ms
            self._cas_loaded = True
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.25
        body = kwargs.get("body")
        start = body.tell() if hasattr(body, "seek") else None
        while True:
            if start is not None:
                body.seek(start)  # a retried upload sends its file from the start again
            try:
                return self._pool.request(method, url, **kwargs)
            except urllib3.exceptions.SSLError:
                raise
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError) as exc:
                if time.monotonic() + delay > deadline:
                    raise RegistryError(f"cannot reach {self.host}: {reason_of(exc)}") from None
            except urllib3.exceptions.HTTPError as exc:
                if time.monotonic() + delay > deadline:
                    raise RegistryError(f"{self.host}: {reason_of(exc)}") from None
            time.sleep(delay)
            delay = min(delay * 2, 4.0)

    # -- auth -------------------------------------------------------------------------

    def _learn_challenge(self, response) -> None:
        if response.status != 401:
            self._challenge = None
            return
        from .auth import parse_challenges

        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        bearer = [c for c in challenges if c.scheme.lower() == "bearer"]
        self._challenge = (bearer or challenges or [None])[0]

    def _authorization(self, scopes: tuple[str, ...], *, fresh: bool = False) -> str | None:
        from .auth import basic_header

        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme.lower() == "basic":
            if self.credentials is None:
                return None
            return basic_header(self.credentials.username, self.credentials.password)
        with self._lock:
            if fresh or scopes not in self._tokens:
                self._tokens[scopes] = self._fetch_token(scopes)
            return f"Bearer {self._tokens[scopes]}"

    def _fetch_token(self, scopes: tuple[str, ...]) -> str:
        """A bearer token for scopes: from an identity (refresh) token, else with basic credentials, else anonymous."""
        from .auth import basic_header, parse_token_response, refresh_form, token_url

        creds = self.credentials
        if creds is not None and creds.identity_token:
            url, form = refresh_form(self._challenge, list(scopes), creds.identity_token)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            response = self._send("POST", url, headers=headers, body=form)
        else:
            headers, account = {}, None
            if creds is not None and creds.username and creds.password:
                headers["Authorization"] = basic_header(creds.username, creds.password)
                account = creds.username
            response = self._send("GET", token_url(self._challenge, list(scopes), account=account), headers=headers)
        if response.status in (401, 403):
            raise RegistryError(
                f"{self.host}: unauthorized (the token service refused the credentials)",
                hint=f"overlayctl login {self.host}",
            )
        if response.status != 200:
            raise RegistryError(f"{self.host}: the token service answered {response.status}")
        return parse_token_response(response.data).value

    def check_credentials(self) -> None:
        """Raise RegistryError unless the registry takes the credentials (as ``docker login`` checks them)."""
        self.ping()
        if self._challenge is None:
            return
        if self._challenge.scheme.lower() == "bearer":
            self._fetch_token(())
            return
        response = self._send("GET", f"{self.base}/v2/", headers={"Authorization": self._authorization(()) or ""})
        if response.status != 200:
            raise RegistryError(f"{self.host}: unauthorized: the registry refused the user name or password")

    # -- requests ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        scopes: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        stream: bool = False,
        what: str = "",
    ):
        """A request to ``/v2/...`` (or an absolute upload URL), authorised for scopes; 401 refetches once."""
        scopes = tuple(sorted(scopes))
        url = path if path.startswith(("http://", "https://")) else self.base + path
        for attempt in (0, 1):
            sent = dict(headers or {})
            auth = self._authorization(scopes, fresh=attempt == 1)
            if auth:
                sent["Authorization"] = auth
            response = self._exchange(method, url, sent, body, stream)
            if response.status != 401 or body is not None and not isinstance(body, bytes | str) or attempt:
                break
            if self._challenge is None:
                self._learn_challenge(response)
            response.drain_conn()
        if response.status == 401:
            raise RegistryError(
                f"{self.host}: unauthorized{' (' + what + ')' if what else ''}", hint=f"overlayctl login {self.host}"
            )
        return response

    def _exchange(self, method: str, url: str, headers: dict[str, str], body: Any, stream: bool):
        """Send a request; follow a GET's or HEAD's redirects, wait out 429 and 503 (Retry-After) until the deadline.

        A redirect to another host (object storage, for blobs) goes without
        the registry's ``Authorization``.
        """
        deadline = time.monotonic() + RETRY_SECONDS
        origin = urllib.parse.urlsplit(url).netloc
        redirects = 0
        while True:
            response = self._send(method, url, headers=headers, body=body, preload_content=not stream, redirect=False)
            location = response.get_redirect_location() if method in ("GET", "HEAD") else None
            if location:
                response.drain_conn()
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise RegistryError(f"{self.host}: more than {MAX_REDIRECTS} redirects for {method} {url}")
                url = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(url).netloc != origin:
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                continue
            wait = _retry_after(response) if response.status in (429, 503) and _replayable(body) else None
            if wait is None or time.monotonic() + wait > deadline:
                return response
            response.drain_conn()
            time.sleep(wait)

    def raise_for(self, response, what: str) -> None:
        """A one-line error for a failed response, with the registry's own words."""
        status = response.status
        message = _registry_message(response)
        if status == 404:
            raise NotFound(f"{what} not found in {self.host}" + (f" ({message})" if message else ""))
        if status == 403:
            raise RegistryError(f"{self.host}: denied: {what}" + (f" ({message})" if message else ""))
        if status == 400:
            raise InvalidArgument(f"{self.host} refused {what}: {message or 'bad request'}")
        raise RegistryError(f"{self.host} answered {status} for {what}" + (f": {message}" if message else ""))

    def close(self) -> None:
        self._pool.clear()


def _replayable(body: Any) -> bool:
    return body is None or isinstance(body, bytes | str)


def _retry_after(response) -> float | None:
    """Seconds a 429 or 503 asks to wait (Retry-After: seconds or an HTTP date); 1 when it does not say."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return 1.0
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _registry_message(response) -> str:
    try:
        data = json.loads(response.data or b"{}")
        errors = data.get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)[:300]
    except (ValueError, AttributeError, TypeError):
        return ""


def reason_of(exc: Exception) -> str:
    text = " ".join(str(getattr(exc, "reason", None) or exc).split())
    if "] " in text and "[Errno" in text:  # urllib3 wraps the OSError in its connection's repr
        text = text[text.rindex("] ") + 2 :]
    return text[:200]
