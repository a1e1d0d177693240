"""registry.credentials: Docker's config.json and credential helpers, in a temp dir (no ~/.docker touched)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys

import pytest

from overlayctl.errors import RegistryError
from overlayctl.registry.credentials import (
    DOCKER_HUB_KEY,
    Credentials,
    CredentialStore,
    convert_to_hostname,
    default_config_dir,
    registry_key,
)


def _auth(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture(autouse=True)
def no_real_docker_config(monkeypatch, tmp_path):
    """Whatever a test forgets to pass, ~/.docker and $DOCKER_CONFIG point into its temp dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)


@pytest.fixture
def config_dir(tmp_path):
    return tmp_path / "docker"


def _write(config_dir, config) -> str:
    config_dir.mkdir(exist_ok=True)
    path = config_dir / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent="\t"))
    path.chmod(0o600)
    return str(path)


def _read(config_dir) -> dict:
    return json.loads((config_dir / "config.json").read_text())


# --- where the file is, and the keys -------------------------------------------


def test_default_config_dir_is_home_docker(tmp_path):
    assert default_config_dir() == str(tmp_path / "home" / ".docker")
    assert CredentialStore().path == str(tmp_path / "home" / ".docker" / "config.json")


def test_docker_config_overrides_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "elsewhere"))
    assert CredentialStore().path == str(tmp_path / "elsewhere" / "config.json")


def test_empty_docker_config_is_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", "")
    assert default_config_dir() == str(tmp_path / "home" / ".docker")


def test_docker_config_is_read(monkeypatch, config_dir):
    _write(config_dir, {"auths": {"reg.example": {"auth": _auth("alice", "pw")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    assert CredentialStore().get("reg.example") == Credentials("alice", "pw")


@pytest.mark.parametrize(
    "host, key",
    [
        ("docker.io", DOCKER_HUB_KEY),
        ("index.docker.io", DOCKER_HUB_KEY),
        ("registry-1.docker.io", DOCKER_HUB_KEY),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("ghcr.io", "ghcr.io"),
        ("localhost", "localhost"),
    ],
)
def test_registry_key(host, key):
    assert registry_key(host) == key


# docker-cli's TestConvertToHostname, row for row.
@pytest.mark.parametrize(
    "key, host",
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "[::1]"),
        ("example.com", "example.com"),
        ("http://example.com", "example.com"),
        ("https://example.com", "example.com"),
        ("https://example.com/", "example.com"),
        ("https://example.com/v2/", "example.com"),
        ("unix:///var/run/docker.sock", "unix:"),
        ("ftp://example.com", "example.com"),
        ("127.0.0.1:6556", "127.0.0.1:6556"),
        ("::1:6556", "::1:6556"),
        ("[::1]:6556", "[::1]:6556"),
        ("example.com:6555", "example.com:6555"),
        ("https://127.0.0.1:6555/v2/", "127.0.0.1:6555"),
        ("https://::1:6555/v2/", "[::1]:6555"),
        ("https://[::1]:6555/v2/", "[::1]:6555"),
        ("http://example.com:6555", "example.com:6555"),
        ("https://example.com:6555", "example.com:6555"),
        ("https://example.com:6555/v2/", "example.com:6555"),
    ],
)
def test_convert_to_hostname(key, host):
    assert convert_to_hostname(key) == host


# --- reading auths ----------------------------------------------------------------


@pytest.mark.parametrize(
    "auths, host, expected",
    [
        ({"reg.example": {"auth": _auth("alice", "pw")}}, "reg.example", Credentials("alice", "pw")),
        ({"reg.example": {"auth": _auth("alice", "pa:ss")}}, "reg.example", Credentials("alice", "pa:ss")),
        ({"reg.example": {"auth": _auth("alice", "pw\x00\x00")}}, "reg.example", Credentials("alice", "pw")),
        ({"reg.example": {"username": "bob", "password": "pw"}}, "reg.example", Credentials("bob", "pw")),
        (
            {"reg.example": {"auth": _auth("alice", "pw"), "username": "bob", "password": "x"}},
            "reg.example",
            Credentials("alice", "pw"),
        ),
        (
            {"reg.example": {"auth": _auth("alice", ""), "identitytoken": "refresh"}},
            "reg.example",
            Credentials("alice", "", identity_token="refresh"),
        ),
        ({"reg.example": {"identitytoken": "refresh"}}, "reg.example", Credentials("", "", identity_token="refresh")),
        ({DOCKER_HUB_KEY: {"auth": _auth("hubber", "pw")}}, "docker.io", Credentials("hubber", "pw")),
        ({DOCKER_HUB_KEY: {"auth": _auth("hubber", "pw")}}, "registry-1.docker.io", Credentials("hubber", "pw")),
        ({"https://reg.example": {"auth": _auth("old", "pw")}}, "reg.example", Credentials("old", "pw")),
        ({"http://reg.example/": {"auth": _auth("old", "pw")}}, "reg.example", Credentials("old", "pw")),
        ({"https://reg.example:5000/v1/": {"auth": _auth("old", "pw")}}, "reg.example:5000", Credentials("old", "pw")),
        (
            {"https://reg.example": {"auth": _auth("old", "pw")}, "reg.example": {"auth": _auth("new", "pw")}},
            "reg.example",
            Credentials("new", "pw"),
        ),
        ({"reg.example": {}}, "reg.example", None),
        ({"reg.example": {"auth": ""}}, "reg.example", None),
        ({"other.example": {"auth": _auth("alice", "pw")}}, "reg.example", None),
        ({"reg.example:5000": {"auth": _auth("alice", "pw")}}, "reg.example", None),
        ({"docker.io": {"auth": _auth("alice", "pw")}}, "docker.io", None),
        ({"https://index.docker.io/v1/x": {"auth": _auth("alice", "pw")}}, "docker.io", None),
    ],
    ids=[
        "auth",
        "colon-in-password",
        "nul-padding",
        "username-password-fields",
        "auth-wins-over-fields",
        "identity-token-with-user",
        "identity-token-alone",
        "hub-docker-io",
        "hub-registry-1",
        "legacy-https",
        "legacy-http-slash",
        "legacy-path-and-port",
        "exact-key-first",
        "empty-entry",
        "empty-auth",
        "other-host",
        "port-matters",
        "hub-only-under-its-key",
        "hub-no-legacy-match",
    ],
)
def test_get_from_auths(config_dir, auths, host, expected):
    _write(config_dir, {"auths": auths})
    assert CredentialStore(str(config_dir)).get(host) == expected


def test_get_without_a_file(config_dir):
    assert CredentialStore(str(config_dir)).get("reg.example") is None


@pytest.mark.parametrize("text", ["", "  \n"], ids=["empty", "blank"])
def test_get_from_an_empty_file(config_dir, text):
    _write(config_dir, text)
    assert CredentialStore(str(config_dir)).get("reg.example") is None


@pytest.mark.parametrize(
    "config, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        ({"auths": []}, "'auths' is not a dict"),
        ({"credsStore": 1}, "'credsStore' is not a str"),
        ({"auths": {"reg.example": "x"}}, "is not an object"),
        ({"auths": {"reg.example": {"auth": "!!!"}}}, "not base64 of user:password"),
        ({"auths": {"reg.example": {"auth": base64.b64encode(b"nocolon").decode()}}}, "not base64 of user:password"),
        ({"auths": {"reg.example": {"auth": _auth("", "pw")}}}, "not base64 of user:password"),
    ],
    ids=[
        "json",
        "not-object",
        "auths-list",
        "creds-store-number",
        "entry-string",
        "auth-base64",
        "no-colon",
        "no-user",
    ],
)
def test_get_refuses_a_broken_config(config_dir, config, message):
    _write(config_dir, config)
    with pytest.raises(RegistryError, match=message) as caught:
        CredentialStore(str(config_dir)).get("reg.example")
    assert "\n" not in caught.value.format()


def test_a_broken_entry_of_another_registry_does_not_matter(config_dir):
    _write(config_dir, {"auths": {"bad.example": {"auth": "!!!"}, "reg.example": {"auth": _auth("a", "b")}}})
    assert CredentialStore(str(config_dir)).get("reg.example") == Credentials("a", "b")


def test_credentials_repr_hides_secrets():
    text = repr(Credentials("alice", "s3cret", identity_token="t0ken"))
    assert "alice" in text and "s3cret" not in text and "t0ken" not in text


# --- writing auths ------------------------------------------------------------------

OTHER_KEYS = {
    "auths": {"other.example": {"auth": _auth("o", "p"), "email": "o@example.com"}},
    "HttpHeaders": {"X-Meta": "1"},
    "psFormat": "table {{.ID}}",
    "currentContext": "remote",
    "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
    "somethingNew": {"nested": [1, 2, 3]},
}


def test_store_round_trip_keeps_every_other_key(config_dir):
    _write(config_dir, OTHER_KEYS)
    store = CredentialStore(str(config_dir))
    store.store("reg.example", Credentials("alice", "pw"))
    written = _read(config_dir)
    assert written["auths"].pop("reg.example") == {"auth": _auth("alice", "pw")}
    assert written == OTHER_KEYS
    assert store.get("reg.example") == Credentials("alice", "pw")
    assert store.get("other.example") == Credentials("o", "p")
    assert stat.S_IMODE(os.stat(config_dir / "config.json").st_mode) == 0o600
    assert sorted(os.listdir(config_dir)) == ["config.json"]  # no temp file left


def test_store_creates_the_dir_0700_and_the_file_0600(tmp_path):
    config_dir = tmp_path / "new" / "docker"
    CredentialStore(str(config_dir)).store("docker.io", Credentials("hubber", "pw"))
    assert stat.S_IMODE(os.stat(config_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(config_dir / "config.json").st_mode) == 0o600
    assert _read(config_dir) == {"auths": {DOCKER_HUB_KEY: {"auth": _auth("hubber", "pw")}}}


def test_store_keeps_the_mode_of_an_existing_file(config_dir):
    """docker-cli's copyFilePermissions: the user's chosen mode stays."""
    _write(config_dir, {})
    os.chmod(config_dir / "config.json", 0o640)
    CredentialStore(str(config_dir)).store("reg.example", Credentials("alice", "pw"))
    assert stat.S_IMODE(os.stat(config_dir / "config.json").st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown to another user")
def test_store_as_root_keeps_the_owner(config_dir):
    """Root (overlayctl under sudo) writing a user's config leaves it the user's, as docker-cli does."""
    _write(config_dir, {})
    os.chown(config_dir / "config.json", 4321, 4321)
    CredentialStore(str(config_dir)).store("reg.example", Credentials("alice", "pw"))
    after = os.stat(config_dir / "config.json")
    assert (after.st_uid, after.st_gid) == (4321, 4321)


def test_store_replaces_the_target_of_a_symlink(config_dir, tmp_path):
    dotfiles = tmp_path / "dotfiles"
    _write(dotfiles, {"psFormat": "x"})
    config_dir.mkdir()
    (config_dir / "config.json").symlink_to(dotfiles / "config.json")
    CredentialStore(str(config_dir)).store("reg.example", Credentials("alice", "pw"))
    assert (config_dir / "config.json").is_symlink()
    assert _read(dotfiles) == {"psFormat": "x", "auths": {"reg.example": {"auth": _auth("alice", "pw")}}}


def test_store_identity_token_and_replace_old_secrets(config_dir):
    _write(config_dir, {"auths": {"reg.example": {"username": "u", "password": "p", "email": "e@x"}}})
    CredentialStore(str(config_dir)).store("reg.example", Credentials("alice", "", identity_token="refresh"))
    assert _read(config_dir)["auths"]["reg.example"] == {
        "email": "e@x",
        "auth": _auth("alice", ""),
        "identitytoken": "refresh",
    }


def test_store_unchanged_does_not_rewrite(config_dir):
    _write(config_dir, {"auths": {"reg.example": {"auth": _auth("alice", "pw")}}})
    before = os.stat(config_dir / "config.json")
    CredentialStore(str(config_dir)).store("reg.example", Credentials("alice", "pw"))
    assert os.stat(config_dir / "config.json").st_ino == before.st_ino


def test_store_never_overwrites_a_broken_config(config_dir):
    _write(config_dir, "{broken")
    with pytest.raises(RegistryError, match="not valid JSON"):
        CredentialStore(str(config_dir)).store("reg.example", Credentials("alice", "pw"))
    assert (config_dir / "config.json").read_text() == "{broken"


def test_erase_removes_the_key_and_legacy_entries(config_dir):
    _write(
        config_dir,
        {
            "auths": {
                "reg.example": {"auth": _auth("a", "1")},
                "https://reg.example": {"auth": _auth("a", "2")},
                "http://reg.example/v1/": {"auth": _auth("a", "3")},
                "reg.example:5000": {"auth": _auth("a", "4")},
            },
            "psFormat": "x",
        },
    )
    store = CredentialStore(str(config_dir))
    assert store.erase("reg.example") is True
    assert store.get("reg.example") is None
    assert _read(config_dir) == {"auths": {"reg.example:5000": {"auth": _auth("a", "4")}}, "psFormat": "x"}
    assert store.erase("reg.example") is False


def test_erase_docker_hub(config_dir):
    _write(config_dir, {"auths": {DOCKER_HUB_KEY: {"auth": _auth("a", "1")}, "ghcr.io": {"auth": _auth("b", "2")}}})
    assert CredentialStore(str(config_dir)).erase("docker.io") is True
    assert _read(config_dir) == {"auths": {"ghcr.io": {"auth": _auth("b", "2")}}}


def test_erase_without_a_file(config_dir):
    assert CredentialStore(str(config_dir)).erase("reg.example") is False
    assert not config_dir.exists()


# --- credential helpers ---------------------------------------------------------------

FAKE_HELPER = """\
#!{python}
# A credential helper as docker-credential-helpers' protocol has it, keeping its secrets in a JSON file.
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
db = os.path.join(here, os.path.basename(__file__) + ".json")
action, data = sys.argv[1], sys.stdin.read()
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps([os.path.basename(__file__), action, data]) + "\\n")
try:
    with open(db) as f:
        secrets = json.load(f)
except FileNotFoundError:
    secrets = {{}}
if action == "store":
    creds = json.loads(data)
    secrets[creds["ServerURL"]] = [creds["Username"], creds["Secret"]]
elif action in ("get", "erase"):
    if data not in secrets:
        print("credentials not found in native keychain")
        sys.exit(1)
    if action == "get":
        username, secret = secrets[data]
        print(json.dumps({{"ServerURL": data, "Username": username, "Secret": secret}}))
    else:
        del secrets[data]
else:
    print("unknown action: " + action)
    sys.exit(1)
with open(db, "w") as f:
    json.dump(secrets, f)
"""


@pytest.fixture
def helper_dir(tmp_path, monkeypatch):
    """A directory first on PATH holding docker-credential-fake and docker-credential-other."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("fake", "other"):
        _install_helper(bin_dir, name, FAKE_HELPER.format(python=sys.executable))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def _install_helper(bin_dir, name: str, script: str) -> None:
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(script)
    path.chmod(0o755)


def _secrets(helper_dir, name: str = "fake") -> dict:
    path = helper_dir / f"docker-credential-{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _calls(helper_dir) -> list[list[str]]:
    path = helper_dir / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_helper_store_get_erase(config_dir, helper_dir):
    _write(config_dir, {"credsStore": "fake", "auths": {"reg.example": {"auth": _auth("plain", "text")}}, "x": 1})
    store = CredentialStore(str(config_dir))
    store.store("reg.example", Credentials("alice", "pw"))
    assert _secrets(helper_dir) == {"reg.example": ["alice", "pw"]}
    # The plain-text copy is gone; Docker leaves an empty entry beside a helper.
    assert _read(config_dir) == {"credsStore": "fake", "auths": {"reg.example": {}}, "x": 1}
    assert store.get("reg.example") == Credentials("alice", "pw")
    assert store.erase("reg.example") is True
    assert _secrets(helper_dir) == {}
    assert _read(config_dir) == {"credsStore": "fake", "auths": {}, "x": 1}
    assert store.get("reg.example") is None
    assert _calls(helper_dir)[:3] == [
        ["docker-credential-fake", "store", '{"ServerURL": "reg.example", "Username": "alice", "Secret": "pw"}\n'],
        ["docker-credential-fake", "get", "reg.example"],
        ["docker-credential-fake", "erase", "reg.example"],
    ]


def test_helper_not_found_means_no_credentials(config_dir, helper_dir):
    _write(config_dir, {"credsStore": "fake"})
    store = CredentialStore(str(config_dir))
    assert store.get("reg.example") is None
    assert store.erase("reg.example") is False


def test_helper_is_the_only_source_when_configured(config_dir, helper_dir):
    """Docker's rule: with a helper configured for the key, auths is not read."""
    _write(config_dir, {"credsStore": "fake", "auths": {"reg.example": {"auth": _auth("plain", "text")}}})
    assert CredentialStore(str(config_dir)).get("reg.example") is None


def test_helper_gets_docker_hub_under_its_key(config_dir, helper_dir):
    _write(config_dir, {"credsStore": "fake"})
    store = CredentialStore(str(config_dir))
    store.store("docker.io", Credentials("hubber", "pw"))
    assert _secrets(helper_dir) == {DOCKER_HUB_KEY: ["hubber", "pw"]}
    assert store.get("registry-1.docker.io") == Credentials("hubber", "pw")


def test_cred_helpers_win_over_creds_store(config_dir, helper_dir):
    _write(config_dir, {"credsStore": "other", "credHelpers": {"reg.example": "fake", "plain.example": ""}})
    store = CredentialStore(str(config_dir))
    store.store("reg.example", Credentials("alice", "pw"))
    store.store("ghcr.io", Credentials("bob", "pw2"))
    store.store("plain.example", Credentials("carol", "pw3"))
    assert _secrets(helper_dir, "fake") == {"reg.example": ["alice", "pw"]}
    assert _secrets(helper_dir, "other") == {"ghcr.io": ["bob", "pw2"]}
    # credHelpers naming "" means the file, even with a credsStore.
    assert _read(config_dir)["auths"]["plain.example"] == {"auth": _auth("carol", "pw3")}
    assert store.get("reg.example") == Credentials("alice", "pw")
    assert store.get("ghcr.io") == Credentials("bob", "pw2")
    assert store.get("plain.example") == Credentials("carol", "pw3")


def test_helper_keeps_an_identity_token_as_user_token(config_dir, helper_dir):
    _write(config_dir, {"credsStore": "fake"})
    store = CredentialStore(str(config_dir))
    store.store("reg.example", Credentials("alice", "", identity_token="refresh"))
    assert _secrets(helper_dir) == {"reg.example": ["<token>", "refresh"]}
    assert store.get("reg.example") == Credentials("", "", identity_token="refresh")


def test_erase_asks_the_helper_under_every_docker_name(config_dir, helper_dir):
    """docker logout erases host, http://host and https://host."""
    _write(config_dir, {"credsStore": "fake"})
    (helper_dir / "docker-credential-fake.json").write_text(json.dumps({"https://reg.example": ["old", "pw"]}))
    assert CredentialStore(str(config_dir)).erase("reg.example") is True
    assert _secrets(helper_dir) == {}
    assert [call[1:] for call in _calls(helper_dir)] == [
        ["erase", "reg.example"],
        ["erase", "http://reg.example"],
        ["erase", "https://reg.example"],
    ]


def test_missing_helper(config_dir, helper_dir):
    _write(config_dir, {"credsStore": "desktop"})
    with pytest.raises(RegistryError, match="docker-credential-desktop is not installed") as caught:
        CredentialStore(str(config_dir)).get("reg.example")
    assert str(config_dir / "config.json") in caught.value.hint


@pytest.mark.parametrize(
    "body, message",
    [
        ('print("not json")', "credential helper docker-credential-broken gave no JSON object for reg.example"),
        ('print("[1, 2]")', "credential helper docker-credential-broken gave no JSON object for reg.example"),
        (
            'print("the keyring is locked\\nsecond line"); sys.exit(3)',
            "credential helper docker-credential-broken failed to get credentials for reg.example: "
            "the keyring is locked second line",
        ),
        (
            "sys.exit(2)",
            "credential helper docker-credential-broken failed to get credentials for reg.example: exit status 2",
        ),
    ],
    ids=["not-json", "not-object", "failure-text", "silent-failure"],
)
def test_broken_helper(config_dir, helper_dir, body, message):
    _install_helper(helper_dir, "broken", f"#!{sys.executable}\nimport sys\nsys.stdin.read()\n{body}\n")
    _write(config_dir, {"credsStore": "broken"})
    with pytest.raises(RegistryError) as caught:
        CredentialStore(str(config_dir)).get("reg.example")
    assert caught.value.message == message


def test_helper_answer_fields_match_regardless_of_case(config_dir, helper_dir):
    """Go's encoding/json, which Docker decodes with, ignores the case of field names."""
    answer = json.dumps({"serverurl": "reg.example", "username": "alice", "secret": "pw"})
    _install_helper(helper_dir, "lower", f"#!{sys.executable}\nprint({answer!r})\n")
    _write(config_dir, {"credsStore": "lower"})
    assert CredentialStore(str(config_dir)).get("reg.example") == Credentials("alice", "pw")


def test_helper_runner_is_injectable(config_dir):
    calls = []

    def run(argv, stdin):
        calls.append((list(argv), stdin))
        return 0, b'{"ServerURL": "reg.example", "Username": "alice", "Secret": "pw"}'

    _write(config_dir, {"credHelpers": {"reg.example": "mem"}})
    assert CredentialStore(str(config_dir), run=run).get("reg.example") == Credentials("alice", "pw")
    assert calls == [(["docker-credential-mem", "get"], b"reg.example")]


def test_helper_that_cannot_run(config_dir, helper_dir):
    (helper_dir / "docker-credential-noexec").write_text("#!/bin/sh\n")
    _write(config_dir, {"credsStore": "noexec"})
    with pytest.raises(RegistryError, match="docker-credential-noexec"):
        CredentialStore(str(config_dir)).get("reg.example")


def test_tests_never_touch_the_real_home(tmp_path):
    assert os.path.expanduser("~").startswith(str(tmp_path))
    assert default_config_dir().startswith(str(tmp_path))
