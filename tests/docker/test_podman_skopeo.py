"""podman and skopeo as the oracle for image save and load.

``podman load`` takes an ``overlayctl image save`` archive (Docker 25's
form) with our image ID, and ``podman run`` runs its Cmd; ``skopeo copy``
of the archive to an OCI layout, plain or with zstd layers, loads back into
the store with the same layer digests.  podman runs with its own storage
under the test's directory, runc (Debian's crun refuses hybrid cgroups) and
the ulimits root without CAP_SYS_RESOURCE can set.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

import pytest

from ..cli import store_cmd
from ..registry.conftest import registries_dir, registry_plain  # noqa: F401 - fixtures for this module

pytestmark = [pytest.mark.root, pytest.mark.docker]

for tool in ("podman", "skopeo", "runc"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make test installs it)", allow_module_level=True)


def _ctl(store, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(store_cmd(store, *args), capture_output=True, text=True)
    assert result.returncode == 0, (args, result.stderr)
    return result


@pytest.fixture
def podman(tmp_path):
    """podman with storage of its own under tmp_path; everything it mounted is unmounted after."""
    root = tmp_path / "podman"
    run_root = tempfile.mkdtemp(prefix="ovp-")  # podman wants a runroot of at most 50 characters
    base = ["podman", "--root", f"{root}/storage", "--runroot", run_root, "--storage-driver", "overlay"]
    base += ["--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"]

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([*base, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (args, result.stderr)
        return result

    try:
        yield run
    finally:
        subprocess.run([*base, "rmi", "-a", "-f"], capture_output=True)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith((str(root), run_root))), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(run_root, ignore_errors=True)


@pytest.fixture
def saved(store, busybox_rootfs, tmp_path):
    """busybox:pod in the store, with a Cmd, saved with overlayctl image save."""
    cmd = '["sh", "-c", "echo hello from the Cmd"]'
    _ctl(store, "image", "import", str(busybox_rootfs), "--tag", "busybox:pod", "--cmd", cmd)
    archive = tmp_path / "busybox.tar"
    _ctl(store, "image", "save", "busybox:pod", "-o", str(archive))
    image = json.loads(_ctl(store, "image", "inspect", "busybox:pod", "--json").stdout)
    return archive, image


def test_podman_loads_and_runs_a_saved_image(podman, saved):
    archive, image = saved
    assert "Loaded image: localhost/busybox:pod" in podman("load", "-i", str(archive)).stdout
    assert podman("inspect", "--format", "{{.Id}}", "localhost/busybox:pod").stdout.strip() == image["id"][7:]
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    out = podman("run", "--rm", "--network", "none", *limits, "localhost/busybox:pod").stdout
    assert out == "hello from the Cmd\n"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_copies_to_an_oci_layout_that_loads_back(store, saved, tmp_path, compression):
    from overlayctl import LayerStore

    archive, image = saved
    layout = tmp_path / f"oci-{compression}"
    extra = ["--dest-compress", "--dest-compress-format", "zstd"] if compression == "zstd" else []
    subprocess.run(["skopeo", "copy", "-q", *extra, f"docker-archive:{archive}", f"oci:{layout}:pod"], check=True)
    (manifest_entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_entry["digest"][7:]).read_text())
    suffix = f"+{compression}"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {f"application/vnd.oci.image.layer.v1.tar{suffix}"}
    other = LayerStore(str(tmp_path / "other"), str(tmp_path / "other-run"))
    report = other.images.load(str(layout))
    (loaded,) = report.images
    assert other.images.get(loaded.id).diff_ids == image["config"]["rootfs"]["diff_ids"]
    assert report.layers_written == len(image["layers"])


def test_podman_pulls_and_runs_what_overlayctl_pushed(podman, saved, store, registry_plain):  # noqa: F811
    _, image = saved
    ref = f"{registry_plain.host}/podman/busybox:pod"
    _ctl(store, "push", "busybox:pod", ref)
    podman("pull", "--tls-verify=false", ref)
    assert podman("inspect", "--format", "{{.Id}}", ref).stdout.strip() == image["id"][7:]
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    assert podman("run", "--rm", "--network", "none", *limits, ref).stdout == "hello from the Cmd\n"
