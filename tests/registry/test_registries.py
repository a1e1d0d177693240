"""The test registries speak the distribution API, with the auth and TLS each promises.

Also pins the behaviour of distribution 2.8 that a client must cope with
(OCI manifests only for a client that accepts them; no upload in one request),
and checks a real client (skopeo) round-trips an image through each.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess

import pytest

from testkit.registry import Auth, Registry

from .conftest import OCI_MANIFEST, V2Client, make_image, parse_challenge, sha256, tar_gz, write_oci_layout

KINDS = ["registry_plain", "registry_basic", "registry_tls", "registry_token"]


@pytest.fixture(params=KINDS, ids=lambda name: name.removeprefix("registry_"))
def registry(request) -> Registry:
    return request.getfixturevalue(request.param)


def _client(registry: Registry) -> V2Client:
    return V2Client(registry, registry.credentials)


def test_v2_answers_with_the_challenge_of_its_auth(registry):
    conn = registry.connection()
    conn.request("GET", "/v2/")
    reply = conn.getresponse()
    reply.read()
    conn.close()
    assert reply.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    if registry.auth is Auth.NONE:
        assert reply.status == 200
        return
    assert reply.status == 401
    scheme, params = parse_challenge(reply.headers["WWW-Authenticate"])
    if registry.auth is Auth.BASIC:
        assert scheme == "basic" and params == {"realm": "overlayctl-test"}
    else:
        assert scheme == "bearer"
        assert params == {"realm": registry.token_server.realm, "service": registry.token_server.service}
    assert _client(registry).request("GET", "/v2/").status == 200


def test_push_and_pull_a_blob_and_an_oci_manifest(registry, repo):
    client = _client(registry)
    image = client.push_image(repo, "v1", tar_gz({"hello.txt": b"hello from the registry\n"}))
    blob = client.request("GET", f"/v2/{repo}/blobs/{sha256(image.layer)}")
    assert blob.status == 200 and blob.body == image.layer
    head = client.request("HEAD", f"/v2/{repo}/blobs/{sha256(image.config)}")
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(image.config)
    for ref in ("v1", image.digest):
        got = client.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert got.status == 200, got.body
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == image.digest
        assert got.body == image.manifest
    assert client.request("GET", f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}
    deleted = client.request("DELETE", f"/v2/{repo}/manifests/{image.digest}")
    assert deleted.status == 202
    gone = client.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert gone.status == 404 and gone.error_codes() == ["MANIFEST_UNKNOWN"]


def test_oci_manifest_is_unknown_to_a_client_that_does_not_accept_it(registry_plain, repo):
    """distribution 2.8: 404 MANIFEST_UNKNOWN for an OCI manifest, by tag or digest, unless Accept names OCI."""
    client = _client(registry_plain)
    image = client.push_image(repo, "v1", tar_gz({"a": b"a"}))
    for ref in ("v1", image.digest):
        reply = client.request("GET", f"/v2/{repo}/manifests/{ref}")
        assert reply.status == 404 and reply.error_codes() == ["MANIFEST_UNKNOWN"]
        assert "accept header does not support OCI manifests" in reply.json()["errors"][0]["message"]


def test_upload_in_one_request_is_not_supported(registry_plain, repo):
    """distribution 2.8 ignores ``POST ...?digest=`` with a body: it opens an upload session, stores nothing."""
    client = _client(registry_plain)
    data = b"one request\n"
    reply = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data)
    assert reply.status == 202 and "Location" in reply.headers
    assert client.request("HEAD", f"/v2/{repo}/blobs/{sha256(data)}").status == 404


def test_chunked_upload_and_cross_repository_mount(registry_plain, repo):
    client = _client(registry_plain)
    data = b"0123456789" * 100
    start = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    first = client.request("PATCH", start.headers["Location"], data[:600], {"Content-Range": "0-599"})
    assert first.status == 202 and first.headers["Range"] == "0-599"
    second = client.request("PATCH", first.headers["Location"], data[600:])
    assert second.status == 202 and second.headers["Range"] == "0-999"
    done = client.request("PUT", f"{second.headers['Location']}&digest={sha256(data)}")
    assert done.status == 201
    mounted = client.request("POST", f"/v2/{repo}-copy/blobs/uploads/?mount={sha256(data)}&from={repo}")
    assert mounted.status == 201
    assert client.request("GET", f"/v2/{repo}-copy/blobs/{sha256(data)}").body == data


def test_basic_refuses_bad_credentials(registry_basic):
    good = _client(registry_basic)
    assert good.request("GET", "/v2/_catalog").status == 200
    for credentials in [(registry_basic.username, "wrong"), ("nobody", registry_basic.password), None]:
        reply = V2Client(registry_basic, credentials).request("GET", "/v2/_catalog")
        assert reply.status == 401, credentials
        assert reply.error_codes() == ["UNAUTHORIZED"]


def test_tls_refuses_an_unknown_ca_and_accepts_its_own(registry_tls, tmp_path):
    conn = http.client.HTTPSConnection("127.0.0.1", registry_tls.port, timeout=5, context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        conn.request("GET", "/v2/")
    conn.close()
    ca = registry_tls.install_ca(tmp_path / "certs.d")
    assert ca == tmp_path / "certs.d" / registry_tls.host / "ca.crt"
    for host in ("127.0.0.1", "localhost"):  # the certificate names both
        context = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection(host, registry_tls.port, timeout=5, context=context)
        conn.request("GET", "/v2/")
        assert conn.getresponse().status == 200
        conn.close()
    plain = http.client.HTTPConnection("127.0.0.1", registry_tls.port, timeout=5)
    plain.request("GET", "/v2/")
    assert plain.getresponse().status == 400  # Go: "Client sent an HTTP request to an HTTPS server."
    plain.close()


def _sorted_actions(scope: str) -> str:
    resource, _, actions = scope.rpartition(":")
    return f"{resource}:{','.join(sorted(actions.split(',')))}"


def test_token_server_hands_out_scoped_tokens(registry_token, repo):
    server = registry_token.token_server
    client = _client(registry_token)
    client.push_image(repo, "v1", tar_gz({"t": b"t"}))
    # The registry lists a scope's actions in Go's map order: "pull,push" or "push,pull".
    asked = [(user, service, [_sorted_actions(s) for s in scopes]) for user, service, scopes in server.requests]
    assert (registry_token.username, server.service, [f"repository:{repo}:pull,push"]) in asked
    with pytest.raises(AssertionError, match="token server: 401"):
        V2Client(registry_token, (registry_token.username, "wrong")).request("GET", f"/v2/{repo}/tags/list")
    with pytest.raises(AssertionError, match="token server: 401"):  # no anonymous pull on this one
        V2Client(registry_token).request("GET", f"/v2/{repo}/tags/list")


@pytest.mark.parametrize("key_ref", ["x5c", "kid"])
def test_token_is_checked_by_the_registry(registry_token, repo, key_ref):
    """Both ways 2.8 finds the signing key: the x5c chain to rootcertbundle, or kid (libtrust key ID)."""
    server = registry_token.token_server
    pull = [{"type": "repository", "name": repo, "actions": ["pull"]}]

    def tags(token: str) -> tuple[int, str]:
        conn = registry_token.connection()
        conn.request("GET", f"/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, response.headers.get("WWW-Authenticate", "")

    assert tags(server.issue("tester", pull, key_ref=key_ref))[0] == 404  # allowed; the repository is unknown
    status, challenge = tags(server.issue("tester", [], key_ref=key_ref))
    assert status == 401 and 'error="insufficient_scope"' in challenge
    for bad in (
        server.issue("tester", pull, key_ref=key_ref, audience="another-registry"),
        server.issue("tester", pull, key_ref=key_ref, lifetime=-120),  # expired, beyond 2.8's 60 s leeway
    ):
        status, challenge = tags(bad)
        assert status == 401 and 'error="invalid_token"' in challenge


def test_token_anonymous_pull(registry_factory, repo):
    registry = registry_factory(auth=Auth.TOKEN, anonymous_pull=True)
    _client(registry).push_image(repo, "v1", tar_gz({"p": b"p"}))
    anonymous = V2Client(registry)
    assert anonymous.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
    assert anonymous.request("POST", f"/v2/{repo}/blobs/uploads/").status == 401  # pull only


def test_registry_leaves_nothing_after_a_failure(tmp_path):
    """An exception inside ``with``: the process is gone, the port closed, the directory removed."""
    with pytest.raises(RuntimeError), Registry(tmp_path, auth=Auth.TOKEN, tls=True) as registry:
        pid, port, where = registry.proc.pid, registry.port, registry.dir
        realm_port = int(registry.token_server.realm.split(":")[2].split("/")[0])
        raise RuntimeError("the test failed")
    assert registry.proc.returncode == -15  # SIGTERM was enough
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for p in (port, realm_port):
        with pytest.raises(ConnectionRefusedError):
            http.client.HTTPConnection("127.0.0.1", p, timeout=2).connect()
    assert not where.exists() and list(tmp_path.iterdir()) == []


# skopeo (containers/image) as a real client: push an OCI layout, pull it back, same manifest.


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (make deps installs it)")
def test_skopeo_round_trip(registry, repo, tmp_path):
    image = make_image(tar_gz({"etc/motd": b"pushed by skopeo\n"}))
    write_oci_layout(tmp_path / "src", "v1", image)
    ref = f"docker://{registry.host}/{repo}:v1"
    auth = ["--authfile", str(tmp_path / "auth.json")]  # not the user's
    dest, src = [*auth], [*auth]
    if registry.credentials:
        dest += ["--dest-creds", ":".join(registry.credentials)]
        src += ["--src-creds", ":".join(registry.credentials)]
    if registry.tls:
        certs = registry.install_ca(tmp_path / "certs.d").parent
        refused = _skopeo("copy", *dest, f"oci:{tmp_path / 'src'}:v1", ref)
        assert refused.returncode != 0 and "certificate signed by unknown authority" in refused.stderr
        dest += ["--dest-cert-dir", str(certs)]
        src += ["--src-cert-dir", str(certs)]
    else:
        dest += ["--dest-tls-verify=false"]
        src += ["--src-tls-verify=false"]
    pushed = _skopeo("copy", *dest, f"oci:{tmp_path / 'src'}:v1", ref)
    assert pushed.returncode == 0, pushed.stderr
    pulled = _skopeo("copy", *src, ref, f"oci:{tmp_path / 'dst'}:v1")
    assert pulled.returncode == 0, pulled.stderr
    (entry,) = json.loads((tmp_path / "dst" / "index.json").read_text())["manifests"]
    assert entry["digest"] == image.digest
    if registry.auth is Auth.TOKEN:
        assert any(scopes == [f"repository:{repo}:pull,push"] for _, _, scopes in registry.token_server.requests)
