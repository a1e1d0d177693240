"""The mount contract, run once per mount API: new (lowerdir+) and classic mount(2)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from overlayctl.kernel import ns
from overlayctl.kernel.mount import MountApi

pytestmark = pytest.mark.root


@pytest.fixture(params=[MountApi.NEW, MountApi.CLASSIC], ids=["new-api", "classic"])
def api(request):
    return request.param


@pytest.fixture
def base(store, rootfs):
    return store.images.import_rootfs(str(rootfs), tag="base")


def in_container(store, name: str, script: str) -> str:
    """Run a shell script inside the container's namespace, cwd = merged."""
    pin = store.containers.get(name).pin
    merged = store.layout.merged(store.containers.get(name).record.id)
    cmd = ["nsenter", f"--mount={pin}", "--", "sh", "-c", f"cd {merged} && {script}"]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def test_two_containers_share_the_image_layers(store, base, api):
    one = store.containers.create("base", name="one")
    two = store.containers.create("base", name="two")
    plan_one, plan_two = store.containers.plan("one"), store.containers.plan("two")
    assert plan_one.lowers[1:] == plan_two.lowers[1:]  # the same layer dirs on disk
    store.containers.mount("one", api=api)
    store.containers.mount("two", api=api)
    # The second container costs its own small directories only.
    size = sum(
        os.lstat(os.path.join(d, f)).st_size
        for d, _, files in os.walk(store.layout.container_dir(two.id))
        for f in files
    )
    assert size < 4096
    assert in_container(store, "one", "cat etc/motd") == "welcome\n"
    assert in_container(store, "two", "cat etc/hostname") == f"{two.hostname}\n"
    assert one.hostname != two.hostname


def test_mount_lives_in_its_own_namespace(store, base, api):
    ctr = store.containers.create("base", name="c")
    state = store.containers.mount("c", api=api)
    assert state.mounted == "namespace" and ns.is_pinned(state.pin)
    merged = store.layout.merged(ctr.id)
    assert not ns.is_mount_point(merged) and os.listdir(merged) == []
    assert "etc" in in_container(store, "c", "ls")
    assert store.containers.unmount("c") is True
    assert not ns.is_pinned(state.pin) and store.containers.get("c").mounted is None


def test_host_mount(store, base, api):
    ctr = store.containers.create("base", name="c")
    assert store.containers.mount("c", host=True, api=api).mounted == "host"
    merged = store.layout.merged(ctr.id)
    assert open(f"{merged}/etc/motd").read() == "welcome\n"
    store.containers.unmount("c")
    assert not ns.is_mount_point(merged)


def test_copy_up_whiteout_and_opaque(store, base, api):
    ctr = store.containers.create("base", name="c")
    store.containers.mount("c", host=True, api=api)
    merged = store.layout.merged(ctr.id)
    lower = store.layout.diff(store.images.get("base").layers[0])
    upper = store.layout.upper(ctr.id)
    with open(f"{merged}/etc/motd", "a") as f:
        f.write("changed\n")
    os.unlink(f"{merged}/data/old.txt")
    subprocess.run(["rm", "-rf", f"{merged}/opt/app"], check=True)
    os.mkdir(f"{merged}/opt/app")
    open(f"{merged}/opt/app/new.txt", "w").write("new\n")

    assert open(f"{lower}/etc/motd").read() == "welcome\n"  # the lower copy is untouched
    assert open(f"{upper}/etc/motd").read() == "welcome\nchanged\n"  # copied up
    st = os.lstat(f"{upper}/data/old.txt")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # a whiteout
    assert not os.path.exists(f"{merged}/data/old.txt") and os.path.exists(f"{lower}/data/old.txt")
    assert os.getxattr(f"{upper}/opt/app", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(f"{merged}/opt/app")) == ["new.txt"]

    changes = {(c.kind, c.path) for c in store.containers.diff("c")}
    assert {("C", "/etc/motd"), ("D", "/data/old.txt"), ("A", "/opt/app/new.txt"), ("C", "/opt/app")} <= changes
    assert {("D", "/opt/app/one.txt"), ("D", "/opt/app/two.txt")} <= changes
    assert ("C", "/data/keep.txt") not in changes


def test_diff_ignores_a_directorys_mtime_alone(store, base, api):
    """Copied up with no change below it and the same mode: not a change (as docker diff)."""
    ctr = store.containers.create("base", name="c")
    store.containers.mount("c", host=True, api=api)
    merged = store.layout.merged(ctr.id)
    os.mkdir(f"{merged}/opt/app/tmp")
    os.rmdir(f"{merged}/opt/app/tmp")
    assert os.path.isdir(f"{store.layout.upper(ctr.id)}/opt/app")  # copied up
    assert store.containers.diff("c") == []
    os.chmod(f"{merged}/opt/app", 0o700)
    assert [(c.kind, c.path) for c in store.containers.diff("c")] == [("C", "/opt"), ("C", "/opt/app")]


def test_plan_mount_and_mountinfo_agree(store, base, api):
    ctr = store.containers.create("base", name="c")
    plan = store.containers.plan("c", links=api is MountApi.CLASSIC)
    store.containers.mount("c", api=api)
    # The namespace is a copy of the host's: other overlays (Docker's, say) may be there too.
    (report,) = [m for m in store.mounts.list(container="c") if m.target == plan.target]
    assert report.target == plan.target
    seen = [entry.store for entry in report.lowers]
    assert seen[0] == {"kind": "init", "container": ctr.id, "name": "c"}
    assert [s["id"] for s in seen[1:]] == store.images.get("base").layers[::-1]
    assert report.upper.path == plan.upper and report.upper.store["kind"] == "upper"
    assert report.work.path == plan.work
    assert "redirect_dir=nofollow" in report.options
    if api is MountApi.NEW:
        assert [e.path for e in report.lowers] == list(plan.lowers)
    else:
        assert [e.path for e in report.lowers] == list(plan.links)
    # The host's own namespace does not show it.
    assert all(m.target != plan.target for m in store.mounts.list())


def test_mount_twice_is_refused_and_rm_needs_force(store, base, api):
    from overlayctl.errors import InUse

    store.containers.create("base", name="c")
    store.containers.mount("c", api=api)
    with pytest.raises(InUse, match="already mounted"):
        store.containers.mount("c", api=api)
    with pytest.raises(InUse, match="is mounted"):
        store.containers.remove("c")
    pin = store.containers.get("c").pin
    store.containers.remove("c", force=True)
    assert not os.path.exists(pin) and store.containers.list() == []


def test_missing_layer_directory_is_named(store, base, api):
    from overlayctl.errors import KernelError

    store.containers.create("base", name="c")
    layer = store.images.get("base").layers[0]
    os.rename(store.layout.diff(layer), store.layout.diff(layer) + ".moved")
    try:
        with pytest.raises(KernelError, match="directory .* is missing"):
            store.containers.mount("c", api=api)
        assert store.containers.get("c").mounted is None
    finally:
        os.rename(store.layout.diff(layer) + ".moved", store.layout.diff(layer))


def test_volatile_upper_remounts_after_clean_unmount(store, base, api):
    ctr = store.containers.create("base", name="c", options=["volatile"])
    for _ in range(2):
        store.containers.mount("c", api=api)
        (mount,) = [m for m in store.mounts.list(container="c") if m.target == store.layout.merged(ctr.id)]
        assert "fsync=volatile" in mount.options
        store.containers.unmount("c")
