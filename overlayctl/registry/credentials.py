"""Docker's credential store: ``config.json`` and its credential helpers, read and written as docker-cli does.

Where credentials for a registry live (docker-cli ``cli/config/configfile``):

- the file is ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``;
- the key of a registry is its host (``127.0.0.1:5000``), except Docker Hub's,
  ``https://index.docker.io/v1/``;
- ``credHelpers[key]`` names the helper for that key (``""`` means none),
  else ``credsStore`` names the helper for every registry.  With a helper,
  the helper alone is asked (Docker does not fall back to ``auths``);
- without one, ``auths[key]`` holds ``auth`` (base64 ``user:password``) or
  ``username``/``password``, and ``identitytoken``.  When the key itself is
  missing, an entry written by older Docker versions with a scheme or a path
  (``https://host/v1/``) matches (docker-cli ``ConvertToHostname``).

A helper is the program ``docker-credential-<name>`` on PATH, spoken to as
docker-credential-helpers' ``client`` does: ``get``/``erase`` read the server
URL on stdin, ``store`` reads ``{"ServerURL", "Username", "Secret"}``; an
identity token travels as the user name ``<token>``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RegistryError, from_oserror

CONFIG_FILE = "config.json"
#: The key Docker keeps Docker Hub's credentials under (registry.IndexServer).
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
HELPER_PREFIX = "docker-credential-"
#: What a helper prints (with a non-zero exit) when it holds nothing for the URL.
HELPER_NOT_FOUND = "credentials not found in native keychain"
#: The user name under which a helper keeps an identity token.
TOKEN_USERNAME = "<token>"

#: Runs a helper: (argv, stdin) -> (exit status, stdout).  Raises OSError when the program cannot run.
HelperRunner = Callable[[Sequence[str], bytes], tuple[int, bytes]]

# The fields of an auths entry that hold credentials; a new login replaces them all.
_SECRET_FIELDS = ("auth", "username", "password", "identitytoken", "registrytoken", "serveraddress")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password, or an identity token (a refresh token for the registry's token server)."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)


def run_helper(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes]:
    """Run a credential helper; its stderr goes to ours, as Docker lets it."""
    done = subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE, check=False)
    return done.returncode, done.stdout


def default_config_dir() -> str:
    """``$DOCKER_CONFIG`` when set and not empty, else ``~/.docker`` (docker-cli ``config.Dir``)."""
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def registry_key(host: str) -> str:
    """The config.json key of a registry host: Docker Hub's hosts give ``https://index.docker.io/v1/``."""
    return DOCKER_HUB_KEY if host in DOCKER_HUB_HOSTS else host


def convert_to_hostname(key: str) -> str:
    """The host (and port) of a key written as a URL: ``https://host:5000/v1/`` -> ``host:5000``.

    docker-cli's ``ConvertToHostname``, Go's URL parsing and its fallback for
    unbracketed IPv6 (``https://::1:5000/`` -> ``[::1]:5000``) included.
    """
    if "://" in key:
        rest = key.split("://", 1)[1]
        address, port = _url_host_port(rest.split("/", 1)[0])
        if address:
            return _join_host_port(address, port) if port else address
        host = rest.split("/", 1)[0]
        if host.count(":") > 1 and not host.startswith("["):
            address, _, port = host.rpartition(":")
            if address and port.isascii() and port.isdigit():
                return _join_host_port(address, port)
        if host:
            return host
    return key.split("/", 1)[0]


def _url_host_port(authority: str) -> tuple[str, str]:
    """Host and port as Go's url.Parse reads them from an authority, or ("", "") where it refuses it."""
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        address, bracket, port = host[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return "", ""
        port = port[1:]
    elif host.count(":") > 1:
        return "", ""
    else:
        address, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return "", ""
    return address, port


def _join_host_port(address: str, port: str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class CredentialStore:
    """The credentials Docker keeps for registries, in ``<config_dir>/config.json`` and its helpers.

    ``config_dir`` defaults to ``default_config_dir()``; ``run`` runs a helper
    (tests pass their own).  Every call reads the file afresh, so a
    ``docker login`` in between is seen.  The file is written only when a
    login or logout changes it: every key this class does not own is kept as
    it was, the file is replaced atomically (temp file + rename, the target
    of a symlink), keeping an existing file's mode and owner (0600 for a new
    one, in a directory created 0700), as docker-cli ``Save`` does.

    Errors are RegistryError (config.json not JSON, a broken ``auth`` entry,
    a helper missing or failing) or the class of a failed system call.
    """

    def __init__(self, config_dir: str | None = None, *, run: HelperRunner = run_helper) -> None:
        self.config_dir = config_dir or default_config_dir()
        self.path = os.path.join(self.config_dir, CONFIG_FILE)
        self._run = run

    def get(self, host: str) -> Credentials | None:
        """The credentials for a registry host, or None when none are kept (anonymous access)."""
        key = registry_key(host)
        config = self._load()
        helper = _helper_for(config, key)
        if helper:
            return self._helper_get(helper, key)
        auths = _auths(config)
        found = key if key in auths else next((k for k in auths if convert_to_hostname(k) == key), None)
        return None if found is None else self._decode_entry(found, auths[found])

    def store(self, host: str, credentials: Credentials) -> None:
        """Keep credentials for a host: in its helper when one is configured, else in ``auths``.

        Beside a helper, the ``auths`` entry becomes ``{}``, as Docker leaves
        it (and a plain-text copy from before is gone).
        """
        key = registry_key(host)
        config = self._load()
        helper = _helper_for(config, key)
        if helper:
            username, secret = credentials.username, credentials.password
            if credentials.identity_token:
                username, secret = TOKEN_USERNAME, credentials.identity_token
            request = json.dumps({"ServerURL": key, "Username": username, "Secret": secret}) + "\n"
            self._helper_call(helper, "store", request.encode(), key)
            entry: dict[str, Any] = {}
        else:
            entry = _encode_entry(credentials)
        auths = _auths(config)
        old = auths.get(key)
        kept = {k: v for k, v in old.items() if k not in _SECRET_FIELDS} if isinstance(old, dict) else {}
        if old == {**kept, **entry}:
            return  # unchanged: Docker does not rewrite the file either
        auths[key] = {**kept, **entry}
        config["auths"] = auths
        self._save(config)

    def erase(self, host: str) -> bool:
        """Forget a host's credentials, in its helper and in ``auths``; False if none were kept.

        As ``docker logout`` does, a host other than Docker Hub is also erased
        under ``http://host`` and ``https://host``; every ``auths`` entry that
        ``get`` would match goes too.
        """
        key = registry_key(host)
        config = self._load()
        keys = [key] if key == DOCKER_HUB_KEY else [key, f"http://{key}", f"https://{key}"]
        erased = False
        for each in keys:
            helper = _helper_for(config, each)
            if helper:
                erased |= self._helper_call(helper, "erase", each.encode(), each) is not None
        auths = _auths(config)
        gone = [k for k in auths if k in keys or (key != DOCKER_HUB_KEY and convert_to_hostname(k) == key)]
        removed = [auths.pop(each) for each in gone]
        if gone:
            config["auths"] = auths
            self._save(config)
        return erased or any(_holds_secret(entry) for entry in removed)

    # --- config.json ---------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise from_oserror(exc, what="cannot read Docker's config") from exc
        if not data.strip():
            return {}  # docker-cli reads an empty file as an empty config
        try:
            config = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(f"Docker's config {self.path} is not valid JSON: {exc}", hint="fix it") from exc
        if not isinstance(config, dict):
            raise RegistryError(f"Docker's config {self.path} is not a JSON object", hint="fix it")
        for name, kind in (("auths", dict), ("credHelpers", dict), ("credsStore", str)):
            if config.get(name) is not None and not isinstance(config[name], kind):
                raise RegistryError(f"Docker's config {self.path}: {name!r} is not a {kind.__name__}", hint="fix it")
        return config

    def _save(self, config: dict[str, Any]) -> None:
        data = json.dumps(config, indent="\t", ensure_ascii=False).encode()
        try:
            os.makedirs(self.config_dir, mode=0o700, exist_ok=True)
            target = os.path.realpath(self.path)  # a symlinked config.json stays a symlink
            try:
                before = os.stat(target)
            except FileNotFoundError:
                before = None
            fd, temp = tempfile.mkstemp(prefix=CONFIG_FILE + ".", dir=os.path.dirname(target))
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                _copy_owner_and_mode(before, temp)
                os.replace(temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as exc:
            raise from_oserror(exc, what="cannot write Docker's config") from exc

    # --- helpers ---------------------------------------------------------------

    def _helper_get(self, helper: str, key: str) -> Credentials | None:
        out = self._helper_call(helper, "get", key.encode(), key)
        if out is None:
            return None
        try:
            answer = json.loads(out)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise RegistryError(f"credential helper {HELPER_PREFIX}{helper} gave no JSON object for {key}")
        # Go's encoding/json matches field names regardless of case.
        fields = {name.lower(): value for name, value in answer.items() if isinstance(value, str)}
        username, secret = fields.get("username", ""), fields.get("secret", "")
        if username == TOKEN_USERNAME:
            return Credentials("", "", identity_token=secret) if secret else None
        return Credentials(username, secret) if username or secret else None

    def _helper_call(self, helper: str, action: str, stdin: bytes, key: str) -> bytes | None:
        """The helper's stdout, or None when it holds nothing for the key."""
        program = HELPER_PREFIX + helper
        try:
            status, out = self._run([program, action], stdin)
        except FileNotFoundError as exc:
            raise RegistryError(
                f"credential helper {program} is not installed (not found on PATH)",
                hint=f"install it, or remove it from credsStore/credHelpers in {self.path}",
            ) from exc
        except OSError as exc:
            raise RegistryError(f"credential helper {program} cannot be run: {exc.strerror or exc}") from exc
        if status == 0:
            return out
        text = " ".join(out.decode("utf-8", "replace").split())
        if text == HELPER_NOT_FOUND:
            return None
        reason = text[:200] or f"exit status {status}"
        raise RegistryError(f"credential helper {program} failed to {action} credentials for {key}: {reason}")

    def _decode_entry(self, key: str, entry: object) -> Credentials | None:
        if not isinstance(entry, dict):
            raise RegistryError(f"Docker's config {self.path}: auths[{key!r}] is not an object", hint="fix it")
        username, password = _text(entry.get("username")), _text(entry.get("password"))
        if _text(entry.get("auth")):
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            username, colon, password = decoded.partition(":")
            if not colon or not username:
                raise RegistryError(
                    f"Docker's config {self.path}: auths[{key!r}].auth is not base64 of user:password",
                    hint=f"log in to {key} again",
                )
            password = password.strip("\x00")
        token = _text(entry.get("identitytoken")) or None
        if not (username or password or token):
            return None  # the empty entry Docker leaves beside a helper
        return Credentials(username, password, identity_token=token)


def _helper_for(config: dict[str, Any], key: str) -> str:
    """The helper for a key: credHelpers[key] when the key is there (even ""), else credsStore, else ""."""
    helpers = config.get("credHelpers") or {}
    if key in helpers:
        return _text(helpers[key])
    return _text(config.get("credsStore"))


def _auths(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("auths") or {}


def _holds_secret(entry: object) -> bool:
    return isinstance(entry, dict) and any(entry.get(name) for name in _SECRET_FIELDS if name != "serveraddress")


def _encode_entry(credentials: Credentials) -> dict[str, str]:
    entry = {}
    if credentials.username or credentials.password:
        pair = f"{credentials.username}:{credentials.password}".encode()
        entry["auth"] = base64.b64encode(pair).decode("ascii")
    if credentials.identity_token:
        entry["identitytoken"] = credentials.identity_token
    return entry


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _copy_owner_and_mode(before: os.stat_result | None, path: str) -> None:
    """Give the new file the old one's mode and owner (root writing a user's config keeps it theirs)."""
    if before is None:
        return  # mkstemp made it 0600
    os.chmod(path, before.st_mode & 0o7777)
    if before.st_uid > 0 and before.st_gid > 0 and (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.chown(path, before.st_uid, before.st_gid)
        except OSError:
            pass  # as docker-cli: the ownership is kept when it can be
