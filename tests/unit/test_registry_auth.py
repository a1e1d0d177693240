"""registry.auth: WWW-Authenticate challenges, token URLs and answers, Basic headers (pure, no network)."""

from __future__ import annotations

import base64
import urllib.parse

import pytest

from overlayctl.errors import RegistryError
from overlayctl.registry.auth import (
    CLIENT_ID,
    MINIMUM_TOKEN_LIFETIME,
    Challenge,
    Token,
    basic_header,
    parse_challenges,
    parse_token_response,
    refresh_form,
    scope,
    token_url,
)

HUB = Challenge(
    "bearer",
    {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"},
)


@pytest.mark.parametrize(
    "header, expected",
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/busybox:pull",
                    },
                )
            ],
        ),
        (
            'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:octo/app:pull"',
            [
                Challenge(
                    "bearer",
                    {"realm": "https://ghcr.io/token", "service": "ghcr.io", "scope": "repository:octo/app:pull"},
                )
            ],
        ),
        (
            'Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",'
            'scope="repository:library/nginx:pull,push"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://harbor.example.com/service/token",
                        "service": "harbor-registry",
                        "scope": "repository:library/nginx:pull,push",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        (
            'Basic realm="https://1234.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com"',
            [
                Challenge(
                    "basic",
                    {"realm": "https://1234.dkr.ecr.us-east-1.amazonaws.com/", "service": "ecr.amazonaws.com"},
                )
            ],
        ),
        (
            'Basic realm="simple", Bearer realm="https://t.example/token", service="reg"',
            [
                Challenge("basic", {"realm": "simple"}),
                Challenge("bearer", {"realm": "https://t.example/token", "service": "reg"}),
            ],
        ),
        (
            # RFC 7235 section 4.1's own example: escapes, a parameter without quotes, two challenges.
            r'Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"',
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        ),
        (
            'Bearer realm="https://t.example/token",scope="repository:a/b:pull,push repository:c/d:pull"',
            [
                Challenge(
                    "bearer",
                    {"realm": "https://t.example/token", "scope": "repository:a/b:pull,push repository:c/d:pull"},
                )
            ],
        ),
        (
            'BEARER Realm = "https://t.example/token" , SERVICE=reg',
            [Challenge("bearer", {"realm": "https://t.example/token", "service": "reg"})],
        ),
        ('Bearer realm="x\\\\y\\,z"', [Challenge("bearer", {"realm": "x\\y,z"})]),
        ('Bearer realm=""', [Challenge("bearer", {"realm": ""})]),
        ("Negotiate abc123==, Basic realm=r", [Challenge("negotiate", {}), Challenge("basic", {"realm": "r"})]),
        ("Bearer", [Challenge("bearer", {})]),
        (", ,Basic realm=r,,", [Challenge("basic", {"realm": "r"})]),
        ("", []),
        ("   ", []),
        # Malformed: what was read before the damage is kept (Docker's parser stops there as well).
        (
            'Bearer realm="https://t.example/token",service="unterminated',
            [Challenge("bearer", {"realm": "https://t.example/token"})],
        ),
        ('Bearer realm="r", service=', [Challenge("bearer", {"realm": "r"})]),
        ('realm="no scheme"', []),
        ('Bearer realm="r", (junk)', [Challenge("bearer", {"realm": "r"})]),
    ],
    ids=[
        "docker-hub",
        "ghcr",
        "harbor",
        "basic-registry-2",
        "basic-ecr",
        "two-challenges",
        "rfc7235-example",
        "comma-and-space-in-quotes",
        "case-and-spaces",
        "escaped-backslash-and-comma",
        "empty-quoted",
        "token68-skipped",
        "scheme-alone",
        "empty-list-elements",
        "empty",
        "blank",
        "unterminated-quote",
        "missing-value",
        "no-scheme",
        "junk-after",
    ],
)
def test_parse_challenges(header, expected):
    assert parse_challenges(header) == expected


def test_parse_challenges_repeated_parameter_keeps_the_last():
    assert parse_challenges("Bearer realm=a, realm=b") == [Challenge("bearer", {"realm": "b"})]


@pytest.mark.parametrize(
    "repository, actions, expected",
    [
        ("library/busybox", ["pull"], "repository:library/busybox:pull"),
        ("team/app", ["pull", "push"], "repository:team/app:pull,push"),
        ("team/app", ("push", "pull", "push"), "repository:team/app:push,pull"),
        ("127.0.0.1:5000/x", iter(["pull"]), "repository:127.0.0.1:5000/x:pull"),
    ],
    ids=["pull", "pull-push", "repeats-dropped", "iterable"],
)
def test_scope(repository, actions, expected):
    assert scope(repository, actions) == expected


@pytest.mark.parametrize("repository, actions", [("", ["pull"]), ("a/b", [])], ids=["no-repository", "no-actions"])
def test_scope_refuses_empty(repository, actions):
    with pytest.raises(ValueError):
        scope(repository, actions)


def _query(url: str) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)


def test_token_url_as_docker_sends_it():
    url = token_url(HUB, [scope("library/busybox", ["pull"])])
    assert url == "https://auth.docker.io/token?scope=repository%3Alibrary%2Fbusybox%3Apull&service=registry.docker.io"


def test_token_url_cross_repository_mount_asks_two_scopes():
    scopes = [scope("team/app", ["pull", "push"]), scope("team/base", ["pull"])]
    url = token_url(HUB, scopes)
    assert _query(url) == [
        ("scope", "repository:team/app:pull,push"),
        ("scope", "repository:team/base:pull"),
        ("service", "registry.docker.io"),
    ]
    assert "scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository%3Ateam%2Fbase%3Apull" in url


def test_token_url_login_with_account_and_offline_token():
    url = token_url(HUB, [], account="al ice", offline=True)
    assert url == (
        "https://auth.docker.io/token"
        f"?account=al+ice&client_id={CLIENT_ID}&offline_token=true&service=registry.docker.io"
    )


def test_token_url_keeps_the_realm_query_and_drops_repeated_scopes():
    challenge = Challenge("bearer", {"realm": "http://127.0.0.1:5000/auth/token?tenant=a%20b#frag"})
    url = token_url(challenge, ["repository:x:pull", "repository:x:pull", ""])
    assert url == "http://127.0.0.1:5000/auth/token?scope=repository%3Ax%3Apull&tenant=a+b"


def test_token_url_without_service():
    url = token_url(Challenge("bearer", {"realm": "https://t.example/token"}), ["repository:x:pull"])
    assert _query(url) == [("scope", "repository:x:pull")]


@pytest.mark.parametrize(
    "realm",
    ["file:///etc/passwd", "ftp://t.example/token", "/token", "https://", "javascript:alert(1)"],
    ids=["file", "ftp", "relative", "no-host", "javascript"],
)
def test_token_url_refuses_a_realm_that_is_not_http(realm):
    with pytest.raises(RegistryError, match="not an http or https URL"):
        token_url(Challenge("bearer", {"realm": realm}), ["repository:x:pull"])


def test_token_url_needs_a_realm():
    with pytest.raises(RegistryError, match="realm"):
        token_url(Challenge("bearer", {"service": "reg"}), [])


def test_token_url_is_for_bearer_challenges():
    with pytest.raises(ValueError):
        token_url(Challenge("basic", {"realm": "https://t.example/token"}), [])


def test_refresh_form():
    url, body = refresh_form(HUB, ["repository:a/b:pull", "repository:c/d:pull"], "refresh-me")
    assert url == "https://auth.docker.io/token"
    assert dict(urllib.parse.parse_qsl(body.decode())) == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-me",
        "client_id": CLIENT_ID,
        "service": "registry.docker.io",
        "scope": "repository:a/b:pull repository:c/d:pull",
    }


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"token": "t1", "expires_in": 300}', Token("t1", 300)),
        (b'{"access_token": "a1"}', Token("a1", None)),
        (
            b'{"token": "t1", "access_token": "t1", "expires_in": 300, "issued_at": "2024-01-01T00:00:00Z"}',
            Token("t1", 300),
        ),
        (b'{"token": "t1", "access_token": "a1"}', Token("a1", None)),
        (b'{"token": "", "access_token": "a1"}', Token("a1", None)),
        (b'{"token": "t1", "access_token": ""}', Token("t1", None)),
        (b'{"token": "t1", "expires_in": "300"}', Token("t1", None)),
        (b'{"token": "t1", "expires_in": 59.9}', Token("t1", 59)),
        (b'{"token": "t1", "expires_in": true}', Token("t1", None)),
        (b'{"access_token": "a1", "refresh_token": "r1"}', Token("a1", None, refresh_token="r1")),
        ('{"token": "tök"}'.encode(), Token("tök", None)),
    ],
    ids=[
        "docker-hub",
        "oauth-access-token",
        "both-equal",
        "both-differ-access-token-wins",
        "empty-token",
        "empty-access-token",
        "expires-in-string",
        "expires-in-float",
        "expires-in-bool",
        "refresh-token",
        "utf8",
    ],
)
def test_parse_token_response(body, expected):
    assert parse_token_response(body) == expected


@pytest.mark.parametrize(
    "body, message",
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'["token"]', "not a JSON object"),
        (b"{}", "holds no token"),
        (b'{"token": 42}', "holds no token"),
        (b'{"token": "", "access_token": null}', "holds no token"),
    ],
    ids=["html", "empty", "not-utf8", "list", "no-token", "token-not-string", "both-empty"],
)
def test_parse_token_response_refuses(body, message):
    with pytest.raises(RegistryError, match=message) as caught:
        parse_token_response(body)
    assert "\n" not in caught.value.message


def test_token_lifetime_has_docker_minimum():
    assert Token("t", None).lifetime == MINIMUM_TOKEN_LIFETIME
    assert Token("t", 10).lifetime == MINIMUM_TOKEN_LIFETIME
    assert Token("t", 300).lifetime == 300


def test_token_repr_hides_the_secret():
    assert "s3cret" not in repr(Token("s3cret", 60, refresh_token="s3cret"))


@pytest.mark.parametrize(
    "username, password, decoded",
    [
        ("alice", "s3cret", b"alice:s3cret"),
        ("alice", "", b"alice:"),
        ("alice", "pa:ss", b"alice:pa:ss"),
        ("jürgen", "pässword", "jürgen:pässword".encode()),
    ],
    ids=["plain", "empty-password", "colon-in-password", "utf8"],
)
def test_basic_header(username, password, decoded):
    header = basic_header(username, password)
    scheme, _, value = header.partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value, validate=True) == decoded


def test_basic_header_known_value():
    # RFC 7617 section 2's example.
    assert basic_header("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
