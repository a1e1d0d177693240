"""Registry authentication, pure: WWW-Authenticate challenges, token requests and answers, Basic headers.

The HTTP client sends the requests and passes the answers in; nothing here
touches the network.  The rules are the distribution token spec's
(docs/content/spec/auth/token.md) as Docker's client (distribution's
``registry/client/auth``) and containers/image carry them out:

1. a request answered 401 carries ``WWW-Authenticate``; ``parse_challenges``;
2. for a ``bearer`` challenge, GET ``token_url(challenge, [scope(...)])``,
   with ``Authorization: basic_header(user, password)`` when there are
   credentials (and ``account=user``), or POST ``refresh_form(...)`` when
   there is an identity token;
3. ``parse_token_response(body)``, then retry with ``Authorization: Bearer
   <token.value>``.  A ``basic`` challenge takes ``basic_header`` directly.
"""

from __future__ import annotations

import base64
import json
import math
import re
import string
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import RegistryError

#: A token is good for at least this long, and for this long when the answer
#: states no expires_in (the spec's default; Docker raises shorter ones to it).
MINIMUM_TOKEN_LIFETIME = 60
#: Sent as client_id where the spec asks for one (offline tokens, OAuth).
CLIENT_ID = "overlayctl"

# RFC 7230 tchar, and RFC 7235 token68 (a scheme's single opaque credential).
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SPACE = " \t"


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: its scheme and parameters, both names lowercase."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token from a token server; expires_in in seconds as the server stated it, or None."""

    value: str = field(repr=False)
    expires_in: int | None = None
    #: Given when the request asked for an offline token (``token_url(offline=True)``); Docker keeps it
    #: as the user's identity token.
    refresh_token: str | None = field(default=None, repr=False)

    @property
    def lifetime(self) -> int:
        """Seconds the token may be used: expires_in, but never less than MINIMUM_TOKEN_LIFETIME (Docker's rule)."""
        return max(self.expires_in or 0, MINIMUM_TOKEN_LIFETIME)


def parse_challenges(header_value: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value, in order (RFC 7235 section 4.1).

    Several challenges may share one value (``Basic realm="x", Bearer
    realm="y"``), which is also how several header lines read once joined
    with ", " (urllib3's ``headers.get`` does).  Quoted values keep their
    commas and lose their backslash escapes.  Scheme and parameter names are
    lowercased (they are case-insensitive); a repeated parameter keeps its
    last value.  A token68 credential (``Negotiate abc==``) is skipped.

    Never raises: at the first malformed element, parsing stops and the
    challenges read so far are returned, as Docker's parser does; a missing
    realm is reported later by ``token_url``.
    """
    challenges: list[Challenge] = []
    text, end = header_value, len(header_value)
    params: dict[str, str] | None = None
    pos = 0
    while True:
        pos = _skip(text, pos, _SPACE + ",")
        if pos >= end:
            break
        name, pos = _read_token(text, pos)
        if not name:
            break
        after = _skip(text, pos, _SPACE)
        if after < end and text[after] == "=":  # name=value: a parameter of the current challenge
            value, pos = _read_value(text, _skip(text, after + 1, _SPACE))
            if params is None or value is None:
                break
            params[name.lower()] = value
            continue
        params = {}
        challenges.append(Challenge(name.lower(), params))
        token68 = _TOKEN68.match(text, after)
        if token68:
            rest = _skip(text, token68.end(), _SPACE)
            if rest == end or text[rest] == ",":
                pos = rest
    return challenges


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TOKEN_CHARS:
        pos += 1
    return text[start:pos], pos


def _read_value(text: str, pos: int) -> tuple[str | None, int]:
    """A token or a quoted string at pos (unescaped), and where it ends; None if there is neither."""
    if pos >= len(text) or text[pos] != '"':
        token, pos = _read_token(text, pos)
        return token or None, pos
    chars: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        chars.append(char)
        pos += 1
    return None, pos  # unterminated


def scope(repository: str, actions: Iterable[str]) -> str:
    """The token scope for actions on a repository: ``repository:team/app:pull,push``.

    A cross-repository mount needs two: push (and pull) on the target and
    pull on the source, asked for in one token request.
    """
    wanted = list(dict.fromkeys(actions))
    if not repository or not wanted:
        raise ValueError(f"a scope needs a repository and actions, not {repository!r} and {wanted!r}")
    return f"repository:{repository}:{','.join(wanted)}"


def token_url(
    challenge: Challenge,
    scopes: Sequence[str],
    *,
    account: str | None = None,
    offline: bool = False,
) -> str:
    """The URL to GET a bearer token from: the challenge's realm with service, scope, ... in its query.

    As Docker sends it: one ``scope`` parameter per scope (repeats dropped),
    ``service`` when the challenge names one, ``account`` (the user name) when
    logging in with credentials, ``offline_token=true&client_id=...`` when
    asking for a refresh token as well (login); the parameters sorted by name,
    after any the realm already has (Go's ``url.Values.Encode``).

    Raises RegistryError when the challenge has no realm or the realm is not
    an http(s) URL.
    """
    realm = _realm(challenge)
    query = urllib.parse.parse_qsl(realm.query, keep_blank_values=True)
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    query.extend(("scope", each) for each in dict.fromkeys(scopes) if each)
    if offline:
        query += [("offline_token", "true"), ("client_id", CLIENT_ID)]
    if account:
        query.append(("account", account))
    query.sort(key=lambda pair: pair[0])  # stable: a name's values keep their order
    return urllib.parse.urlunsplit(realm._replace(query=urllib.parse.urlencode(query), fragment=""))


def refresh_form(challenge: Challenge, scopes: Sequence[str], refresh_token: str) -> tuple[str, bytes]:
    """The POST that trades an identity (refresh) token for a bearer token: the realm URL and the form body.

    Sent as ``application/x-www-form-urlencoded``; the scopes go space-separated
    in one ``scope`` field (OAuth 2, spec auth/oauth.md), as Docker sends them.
    The answer is read with ``parse_token_response``.
    """
    realm = _realm(challenge)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "service": challenge.params.get("service", ""),
        "scope": " ".join(each for each in dict.fromkeys(scopes) if each),
    }
    return urllib.parse.urlunsplit(realm._replace(fragment="")), urllib.parse.urlencode(form).encode("ascii")


def _realm(challenge: Challenge) -> urllib.parse.SplitResult:
    if challenge.scheme != "bearer":
        raise ValueError(f"a token is asked for with a bearer challenge, not {challenge.scheme!r}")
    realm = challenge.params.get("realm", "")
    if not realm:
        raise RegistryError("the registry asked for a bearer token but named no token server (realm)")
    parts = urllib.parse.urlsplit(realm)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise RegistryError(f"the registry's token server {realm!r} is not an http or https URL")
    return parts


def parse_token_response(body: bytes) -> Token:
    """The token in a token server's JSON answer.

    ``token`` and ``access_token`` are the same field under two names (spec
    auth/token.md); when both are set, ``access_token`` is taken, as Docker's
    client (distribution ``fetchTokenWithBasicAuth``) does.  A missing or
    unusable ``expires_in`` is None (``Token.lifetime`` then gives the
    default).  Raises RegistryError when the body is not a JSON object or
    holds no token.
    """
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        sample = body[:40].decode("utf-8", "replace")
        raise RegistryError(f"the token server's answer is not JSON (it starts {sample!r})") from exc
    if not isinstance(answer, dict):
        raise RegistryError(f"the token server's answer is not a JSON object but {type(answer).__name__}")
    value = _text(answer.get("access_token")) or _text(answer.get("token"))
    if not value:
        raise RegistryError('the token server\'s answer holds no token (neither "token" nor "access_token")')
    return Token(value, _seconds(answer.get("expires_in")), _text(answer.get("refresh_token")) or None)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _seconds(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value for HTTP Basic auth: ``Basic base64(user:password)`` (UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
