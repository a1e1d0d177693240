"""overlayctl pull, push, login and logout against real registries (docker-registry 2.8 on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tarfile

import pytest

from ..cli import store_cmd

pytestmark = pytest.mark.root  # containers run to check what was pulled


@pytest.fixture
def docker_config(tmp_path, monkeypatch) -> str:
    """A DOCKER_CONFIG of this test's own: no real ~/.docker is read or written."""
    path = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return str(path)


@pytest.fixture
def ctl(busybox, docker_config):
    """overlayctl as a real process on a store holding busybox, with a committed image app:2 (a whiteout)."""

    def run(*args: str, check: bool = True, store=None, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        env = {**os.environ, "OVERLAYCTL_REGISTRY_RETRY_SECONDS": "2", **kwargs.pop("env", {})}
        result = subprocess.run(
            store_cmd(store or busybox, *args), capture_output=True, text=True, timeout=120, env=env, **kwargs
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr}")
        return result

    run("run", "--name", "maker", "busybox", "--", "sh", "-c", "echo v2 > /etc/motd; mkdir /app; rm /bin/ls")
    run("container", "commit", "maker", "app:2")
    run("rm", "maker")
    run.store = busybox
    return run


def store_state(store) -> tuple:
    """Everything a failed verb must leave as it was: layers, images, tags."""
    images = sorted((i.id, tuple(store.images.tags(i.id))) for i in store.images.list())
    return sorted(r.id for r in store.layers.list()), images


def test_push_then_pull_gives_the_same_image(ctl, fresh, registry_plain, repo):
    ref = f"{registry_plain.host}/{repo}:2"
    pushed = json.loads(ctl("push", "app:2", ref, "--json").stdout)
    assert [layer["status"] for layer in pushed["layers"]] == ["uploaded", "uploaded"]
    image_id = ctl.store.images.get("app:2").id
    assert pushed["config"]["digest"] == image_id

    pulled = json.loads(ctl("pull", ref, "--json", store=fresh).stdout)
    assert pulled["image"] == {"id": image_id, "tags": [ref]}
    assert pulled["manifest"] == pushed["manifest"]
    assert [layer["status"] for layer in pulled["layers"]] == ["fetched", "fetched"]
    assert [layer["diff_id"] for layer in pulled["layers"]] == ctl.store.images.get("app:2").diff_ids
    out = ctl("run", "--rm", ref, "--", "sh", "-c", "cat /etc/motd; ls -d /app; ls /bin/ls", check=False, store=fresh)
    assert out.stdout.split() == ["v2", "/app"] and "No such file" in out.stderr

    # Again: nothing fetched, nothing uploaded, the same manifest.
    again = json.loads(ctl("pull", ref, "--json", store=fresh).stdout)
    assert [layer["status"] for layer in again["layers"]] == ["present", "present"]
    repushed = json.loads(ctl("push", "app:2", ref, "--json").stdout)
    assert {layer["status"] for layer in repushed["layers"]} == {"exists"}
    assert repushed["manifest"] == pushed["manifest"]


def test_pull_by_digest_leaves_the_image_untagged(ctl, fresh, registry_plain, repo):
    pushed = json.loads(ctl("push", "app:2", f"{registry_plain.host}/{repo}:x", "--json").stdout)
    pulled = json.loads(ctl("pull", f"{registry_plain.host}/{repo}@{pushed['manifest']}", "--json", store=fresh).stdout)
    assert pulled["image"]["tags"] == [] and fresh.images.tags(pulled["image"]["id"]) == []


def test_zstd_layers_and_an_oci_manifest(ctl, fresh, registry_plain, repo):
    ref = f"{registry_plain.host}/{repo}:z"
    pushed = json.loads(ctl("push", "--compress", "zstd", "app:2", ref, "--json").stdout)
    manifest = registry_plain_manifest(registry_plain, repo, "z")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    pulled = json.loads(ctl("pull", ref, "--json", store=fresh).stdout)
    assert pulled["manifest"] == pushed["manifest"] and pulled["image"]["id"] == ctl.store.images.get("app:2").id


def registry_plain_manifest(registry, repo: str, tag: str) -> dict:
    conn = registry.connection()
    try:
        conn.request(
            "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        )
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_failed_pulls_are_one_line_and_change_nothing(ctl, registry_plain, repo):
    before = store_state(ctl.store)
    cases = [
        (f"{registry_plain.host}/{repo}:missing", "not found in"),
        ("127.0.0.1:1/nothing:here", "cannot reach 127.0.0.1:1"),
        ("Not A Ref", "invalid"),
    ]
    for ref, message in cases:
        result = ctl("pull", ref, check=False)
        assert result.returncode in (1, 2) and message in result.stderr, (ref, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert store_state(ctl.store) == before
    assert os.listdir(ctl.store.layout.staging) == []


def test_basic_auth_login_logout(ctl, registry_basic, repo, docker_config):
    host = registry_basic.host
    ref = f"{host}/{repo}:1"
    refused = ctl("push", "app:2", ref, check=False)
    assert refused.returncode == 1 and "unauthorized" in refused.stderr and f"overlayctl login {host}" in refused.stderr

    wrong = ctl(
        "login", "-u", registry_basic.username, "--password-stdin", host, input="nope\n", stdin=None, check=False
    )
    assert wrong.returncode == 1 and "unauthorized" in wrong.stderr
    assert not os.path.exists(f"{docker_config}/config.json")

    ctl(
        "login",
        "-u",
        registry_basic.username,
        "--password-stdin",
        host,
        input=registry_basic.password + "\n",
        stdin=None,
    )
    config_file = f"{docker_config}/config.json"
    assert stat.S_IMODE(os.stat(config_file).st_mode) == 0o600
    assert host in json.load(open(config_file))["auths"]
    ctl("push", "app:2", ref)
    assert json.loads(ctl("pull", ref, "--json").stdout)["image"]["id"] == ctl.store.images.get("app:2").id

    assert "Removing login credentials" in ctl("logout", host).stdout
    assert host not in json.load(open(config_file)).get("auths", {})
    assert ctl("pull", ref, check=False).returncode == 1


def test_token_auth(ctl, fresh, registry_token, repo):
    host = registry_token.host
    ref = f"{host}/{repo}:1"
    ctl("login", "-u", registry_token.username, "-p", registry_token.password, host)
    ctl("push", "app:2", ref)
    pulled = json.loads(ctl("pull", ref, "--json", store=fresh).stdout)
    assert pulled["image"]["id"] == ctl.store.images.get("app:2").id


def test_tls_is_verified_with_the_registrys_ca(ctl, fresh, registry_tls, repo, tmp_path):
    ref = f"{registry_tls.host}/{repo}:1"
    certs = tmp_path / "certs.d"
    refused = ctl("push", "app:2", ref, check=False, env={"OVERLAYCTL_CERTS_DIR": str(certs)})
    assert refused.returncode == 1 and "TLS" in refused.stderr
    assert f"{certs}/{registry_tls.host}/ca.crt" in refused.stderr
    registry_tls.install_ca(certs)
    ctl("push", "app:2", ref, env={"OVERLAYCTL_CERTS_DIR": str(certs)})
    pulled = json.loads(ctl("pull", ref, "--json", store=fresh, env={"OVERLAYCTL_CERTS_DIR": str(certs)}).stdout)
    assert pulled["image"]["id"] == ctl.store.images.get("app:2").id


def test_skopeo_reads_what_overlayctl_pushed(ctl, registry_plain, repo, tmp_path):
    ref = f"{registry_plain.host}/{repo}:1"
    ctl("push", "app:2", ref)
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], capture_output=True, text=True, check=True
    )
    config = subprocess.run(
        ["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(config.stdout)["rootfs"]["diff_ids"] == ctl.store.images.get("app:2").diff_ids
    assert len(json.loads(inspected.stdout)["Layers"]) == 2


def test_a_pulled_image_pushed_again_reuses_or_mounts_its_blobs(ctl, fresh, registry_plain, repo):
    """Its layers keep the blobs they came from: the same repository has them, another one mounts them."""
    ref = f"{registry_plain.host}/{repo}:1"
    first = json.loads(ctl("push", "app:2", ref, "--json").stdout)
    ctl("pull", ref, store=fresh)
    record = fresh.layers.get(fresh.images.get(ref).layers[-1])
    assert (
        record.blob["digest"] == first["layers"][-1]["digest"]
        and record.blob["source"] == f"{registry_plain.host}/{repo}"
    )

    same_repo = json.loads(ctl("push", ref, f"{registry_plain.host}/{repo}:again", "--json", store=fresh).stdout)
    assert {layer["status"] for layer in same_repo["layers"]} == {"exists"}
    assert same_repo["manifest"] == first["manifest"]
    other_repo = json.loads(ctl("push", ref, f"{registry_plain.host}/{repo}-copy:1", "--json", store=fresh).stdout)
    assert {layer["status"] for layer in other_repo["layers"]} == {"mounted"}
    assert other_repo["manifest"] == first["manifest"]


def test_an_interrupted_pull_resumes_from_the_download_cache(ctl, fresh, registry_plain, repo):
    """Bytes received before an interruption stay in the cache; the next pull asks only for the rest (Range)."""
    ctl("run", "--name", "big", "busybox", "--", "sh", "-c", "head -c 3000000 /dev/urandom > /big")
    ctl("container", "commit", "big", "big:1")
    ref = f"{registry_plain.host}/{repo}:1"
    top = json.loads(ctl("push", "big:1", ref, "--json").stdout)["layers"][-1]
    conn = registry_plain.connection()
    try:
        conn.request("GET", f"/v2/{repo}/blobs/{top['digest']}", headers={"Range": "bytes=0-999999"})
        head = conn.getresponse().read()
    finally:
        conn.close()
    assert len(head) == 1_000_000
    cache = f"{fresh.layout.blob_cache}/sha256/{top['digest'].split(':')[1]}"
    os.makedirs(os.path.dirname(cache), exist_ok=True)

    # A damaged partial blob fails the pull (its digest), is dropped, and changes nothing in the store.
    with open(cache + ".partial", "wb") as f:
        f.write(b"x" * len(head))
    failed = ctl("pull", ref, check=False, store=fresh)
    assert failed.returncode == 1 and "digest" in failed.stderr and fresh.images.list() == []
    assert not os.path.exists(cache + ".partial")

    # What an interrupted pull left: the first megabyte.  The pull continues after it.
    with open(cache + ".partial", "wb") as f:
        f.write(head)
    # The failed pull kept the base layer's blob, verified in full: df counts both files.
    cached = [os.path.join(d, n) for d, _, names in os.walk(fresh.layout.blob_cache) for n in names]
    size = sum(os.path.getsize(p) for p in cached)
    usage = json.loads(ctl("system", "df", "--json", store=fresh).stdout)["summary"]
    assert {"type": "Download cache", "total": 2, "active": 0, "size": size, "reclaimable": size} in usage
    pulled = json.loads(ctl("pull", ref, "--keep-blobs", "--json", store=fresh).stdout)
    assert pulled["layers"][-1]["resumed"] == 1_000_000 and pulled["layers"][-1]["status"] == "fetched"
    assert pulled["image"]["id"] == ctl.store.images.get("big:1").id
    kept = sorted(os.listdir(os.path.dirname(cache)))
    assert kept == sorted(layer["digest"].split(":")[1] for layer in pulled["layers"])  # --keep-blobs: verified, kept

    pruned = json.loads(ctl("system", "prune", "-f", "--json", store=fresh).stdout)
    assert pruned["cache"] > 3_000_000 and not os.path.exists(cache)
    assert json.loads(ctl("check", "--json", store=fresh).stdout)["problems"] == []


def test_an_index_is_followed_to_the_hosts_platform_or_the_one_asked_for(ctl, fresh, registry_plain, repo):
    import gzip

    from overlayctl.distribution import mediatypes as mt

    from .conftest import V2Client, sha256, tar_gz

    client = V2Client(registry_plain)
    entries, configs = [], {}
    for arch in ("arm64", "amd64"):
        layer = tar_gz({"arch": f"{arch}\n".encode()})
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [sha256(gzip.decompress(layer))]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.OCI_CONFIG, "digest": client.push_blob(repo, config), "size": len(config)},
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": client.push_blob(repo, layer),
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        digest = client.push_manifest(repo, sha256(manifest), manifest)
        entries.append(
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
        configs[arch] = sha256(config)
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}).encode()
    client.push_manifest(repo, "multi", index, mt.OCI_INDEX)
    ref = f"{registry_plain.host}/{repo}:multi"

    host = json.loads(ctl("pull", ref, "--json", store=fresh).stdout)
    assert host["image"]["id"] == configs["amd64"] and host["manifest"] == sha256(index)
    arm = json.loads(ctl("pull", "--platform", "linux/arm64", ref, "--json", store=fresh).stdout)
    assert arm["image"]["id"] == configs["arm64"]
    missing = ctl("pull", "--platform", "linux/s390x", ref, check=False, store=fresh)
    assert missing.returncode == 1 and "no image for linux/s390x" in missing.stderr and "arm64" in missing.stderr


def test_kept_blobs_go_to_another_registry_as_they_came(ctl, fresh, registry_plain, registry_factory, repo):
    """pull --keep-blobs: a push to another registry uploads the original blobs, so the manifest digest stays."""
    ref = f"{registry_plain.host}/{repo}:1"
    first = json.loads(ctl("push", "app:2", ref, "--json").stdout)
    ctl("pull", "--keep-blobs", ref, store=fresh)
    other = registry_factory()
    again = json.loads(ctl("push", ref, f"{other.host}/{repo}:1", "--json", store=fresh).stdout)
    assert [layer["digest"] for layer in again["layers"]] == [layer["digest"] for layer in first["layers"]]
    assert {layer["status"] for layer in again["layers"]} == {"uploaded"}
    assert again["manifest"] == first["manifest"]


def _index_of(archive) -> dict:
    with tarfile.open(archive) as tar:
        return json.load(tar.extractfile("index.json"))


def test_kept_blobs_give_the_registry_manifest_to_save_and_push(
    ctl, fresh, registry_plain, registry_factory, repo, tmp_path
):
    """A manifest in another tool's form (not Docker's): image save --format oci-archive and a push keep its digest."""
    from .conftest import V2Client, sha256, tar_gz

    image = V2Client(registry_plain).push_image(repo, "1", tar_gz({"etc/motd": b"kept\n"}))
    ref = f"{registry_plain.host}/{repo}:1"
    ctl("pull", "--keep-blobs", ref, store=fresh)
    archive = tmp_path / "kept.tar"
    ctl("image", "save", "--format", "oci-archive", "-o", str(archive), ref, store=fresh)
    assert [m["digest"] for m in _index_of(archive)["manifests"]] == [image.digest]
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True, check=True
    )
    assert json.loads(inspected.stdout)["Digest"] == image.digest
    assert json.loads(inspected.stdout)["Layers"] == [sha256(image.layer)]
    docker_form = tmp_path / "docker.tar"  # Docker's form keeps its uncompressed layers: docker load takes them
    ctl("image", "save", "-o", str(docker_form), ref, store=fresh)
    with tarfile.open(docker_form) as tar:
        listed = json.load(tar.extractfile("manifest.json"))[0]["Layers"]
    assert listed == [f"blobs/sha256/{d[7:]}" for d in fresh.images.get(ref).diff_ids]

    other = registry_factory()
    pushed = json.loads(ctl("push", ref, f"{other.host}/{repo}:1", "--json", store=fresh).stdout)
    assert pushed["manifest"] == image.digest and [layer["status"] for layer in pushed["layers"]] == ["uploaded"]

    # Without the kept blobs, the layers are the store's own tars: another manifest, the same image.
    ctl("system", "prune", "-f", store=fresh)
    again = tmp_path / "again.tar"
    ctl("image", "save", "--format", "oci-archive", "-o", str(again), ref, store=fresh)
    assert [m["digest"] for m in _index_of(again)["manifests"]] != [image.digest]
    loaded = json.loads(ctl("image", "load", "-i", str(archive), "--json").stdout)
    assert [i["id"] for i in loaded["images"]] == [sha256(image.config)]


def test_keep_blobs_fetches_the_blobs_of_layers_already_stored(ctl, fresh, registry_plain, repo, tmp_path):
    """Layers in the store are not fetched by a pull, but --keep-blobs asks for their blobs: they are kept too."""
    ref = f"{registry_plain.host}/{repo}:1"
    first = json.loads(ctl("push", "app:2", ref, "--json").stdout)
    ctl("pull", ref, store=fresh)
    assert fresh.images.get(ref)
    pulled = json.loads(ctl("pull", "--keep-blobs", ref, "--json", store=fresh).stdout)
    assert {layer["status"] for layer in pulled["layers"]} == {"present"}
    archive = tmp_path / "kept.tar"
    ctl("image", "save", "--format", "oci-archive", "-o", str(archive), ref, store=fresh)
    assert [m["digest"] for m in _index_of(archive)["manifests"]] == [first["manifest"]]


def test_two_pulls_of_one_image_at_once_both_succeed(ctl, fresh, registry_plain, repo):
    """One pull writes a blob into the cache; the other, meanwhile, streams it uncached."""
    ctl("run", "--name", "big", "busybox", "--", "sh", "-c", "head -c 4000000 /dev/urandom > /big")
    ctl("container", "commit", "big", "big:1")
    ref = f"{registry_plain.host}/{repo}:1"
    ctl("push", "big:1", ref)
    pulls = [
        subprocess.Popen(store_cmd(fresh, "pull", ref), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in pulls]
    for p in pulls:
        p.stdout.close()
        p.stderr.close()
    assert results == [(0, ""), (0, "")]
    assert fresh.images.get(ref).id == ctl.store.images.get("big:1").id
    assert json.loads(ctl("check", "--json", store=fresh).stdout)["problems"] == []


def test_a_blob_altered_in_the_registrys_storage_fails_the_pull(ctl, fresh, registry_factory, repo):
    registry = registry_factory()
    ref = f"{registry.host}/{repo}:1"
    top = json.loads(ctl("push", "app:2", ref, "--json").stdout)["layers"][-1]["digest"]
    hexdigest = top.split(":")[1]
    data = registry.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    failed = ctl("pull", ref, check=False, store=fresh)
    assert failed.returncode == 1 and top in failed.stderr and "digest" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert store_state(fresh) == ([], []) and os.listdir(fresh.layout.staging) == []
    assert not os.path.exists(f"{fresh.layout.blob_cache}/sha256/{hexdigest}")  # no damaged blob is kept


def test_a_registry_stopped_mid_pull_then_started_again(ctl, fresh, registry_factory, repo):
    """The pull waits for the registry (retries), then asks for the rest of the blob it was receiving."""
    import threading

    from .fake import StallingProxy

    ctl("run", "--name", "big", "busybox", "--", "sh", "-c", "head -c 3000000 /dev/urandom > /big")
    ctl("container", "commit", "big", "big:1")
    registry = registry_factory()
    pushed = json.loads(ctl("push", "big:1", f"{registry.host}/{repo}:1", "--json").stdout)
    base, top = (layer["digest"] for layer in pushed["layers"])
    proxy = StallingProxy(registry.port, top, after=1_000_000)
    try:
        env = {"OVERLAYCTL_REGISTRY_RETRY_SECONDS": "30"}
        pull = subprocess.Popen(
            store_cmd(fresh, "pull", f"{proxy.host}/{repo}:1", "--json", "--jobs", "1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        try:
            assert proxy.stalled.wait(60), "the pull never reached the big blob"
            registry.stop()  # in the middle of the top layer's blob
            threading.Event().wait(1.5)
            registry.start_again()
            out, err = pull.communicate(timeout=120)
        finally:
            if pull.poll() is None:
                pull.kill()
                pull.communicate()
    finally:
        proxy.close()
    assert pull.returncode == 0, err
    assert json.loads(out)["image"]["id"] == ctl.store.images.get("big:1").id
    after_restart = registry.log_text()  # the restarted registry's log
    assert f"/blobs/{base}" not in after_restart  # verified before the stop: not fetched again
    assert re.search(rf"GET /v2/{repo}/blobs/{top} HTTP/1.1\" 206 ", after_restart)  # the rest of the blob


def test_pull_and_push_show_each_layer_on_a_terminal(ctl, fresh, registry_plain, repo):
    from ..cli import with_stderr_on_a_terminal

    ref = f"{registry_plain.host}/{repo}:1"
    pushed, shown = with_stderr_on_a_terminal(store_cmd(ctl.store, "push", "app:2", ref))
    assert pushed.returncode == 0 and "Pushed [" in shown and "2/2 layers" in shown
    layers = ctl.store.images.get("app:2").layers
    assert all(layer.split(":")[-1][:12] in shown for layer in layers)
    pulled, shown = with_stderr_on_a_terminal(store_cmd(fresh, "pull", ref))
    assert pulled.returncode == 0 and "Pulled [" in shown and "done" in shown and "\x1b[" in shown
