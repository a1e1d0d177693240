"""The store on disk: layout, content addresses, references, atomicity, cleanup."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from overlayctl.errors import AlreadyExists, InUse, InvalidArgument, NotFound, OverlayctlError, StoreError

pytestmark = pytest.mark.root


def tree_snapshot(root: str) -> dict[str, tuple]:
    """Every path under root with its type, size and mtime, to compare before/after."""
    snap = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            st = os.lstat(path)
            snap[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return snap


def assert_consistent(store) -> None:
    """Every record names objects that exist, and every object has its record."""
    root = store.layout.root
    for name in os.listdir(f"{root}/layers"):
        assert os.path.isfile(f"{root}/layers/{name}/layer.json") and os.path.isdir(f"{root}/layers/{name}/diff")
    for name in os.listdir(f"{root}/l"):
        assert os.path.isdir(f"{root}/l/{name}"), f"dangling link {name}"
    for image in store.images.list():
        for layer in image.layers:
            assert os.path.isdir(store.layout.diff(layer))
    for ref, image_id in store.images.tags().items():
        assert os.path.isfile(store.layout.image_json(image_id)), ref


def test_layout_is_readable_with_ls(store, rootfs):
    image = store.images.import_rootfs(str(rootfs), tag="base")
    (layer_id,) = image.layers
    root = store.layout.root
    hexid = layer_id.split(":")[1]
    assert os.path.isdir(f"{root}/layers/{hexid}/diff/etc")
    record = json.load(open(f"{root}/layers/{hexid}/layer.json"))
    assert record["diff_id"] == layer_id and record["parent"] is None and record["size"] > 0
    assert os.readlink(f"{root}/l/{record['link']}") == f"../layers/{hexid}/diff"
    assert json.load(open(f"{root}/tags.json")) == {"base:latest": image.id}
    assert os.listdir(f"{root}/images") == [image.id.split(":")[1] + ".json"]
    assert json.load(open(f"{root}/store.json"))["backing"]["fs_type"] in ("ext4", "tmpfs", "xfs", "btrfs")


def test_same_content_is_stored_once(store, rootfs):
    first = store.images.import_rootfs(str(rootfs), tag="a")
    second = store.images.import_rootfs(str(rootfs), tag="b")
    assert first.layers == second.layers
    assert len(store.layers.list()) == 1


def test_layer_from_tar_keeps_the_tar_digest(store, rootfs, tmp_path):
    import hashlib

    tar = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    layer = store.layers.create(str(tar))
    assert layer.diff_id == "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()
    assert layer.id == layer.diff_id  # a base layer's chain ID is its diff_id


def test_references_by_tag_and_prefix(store, rootfs):
    image = store.images.import_rootfs(str(rootfs), tag="base:1")
    assert store.images.get("base:1").id == image.id
    assert store.images.get(image.id.split(":")[1][:8]).id == image.id
    with pytest.raises(NotFound, match="no such image: nope"):
        store.images.get("nope")
    store.containers.create("base:1", name="web")
    assert store.containers.get("web").record.image == image.id
    with pytest.raises(AlreadyExists, match="already taken"):
        store.containers.create("base:1", name="web")
    with pytest.raises(InvalidArgument):
        store.containers.create("base:1", name="bad name")


def test_ambiguous_prefix(store, tmp_path):
    ids = []
    for i in range(40):
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "f").write_text(str(i))
        ids.append(store.layers.create(str(d)).id)
    first_chars = [i.split(":")[1][0] for i in ids]
    shared = next(c for c in first_chars if first_chars.count(c) > 1)
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.layers.get(shared)


def test_removal_rules(store, rootfs):
    image = store.images.import_rootfs(str(rootfs), tag="base")
    (layer_id,) = image.layers
    with pytest.raises(InUse, match="used by image base:latest"):
        store.layers.remove(layer_id)
    store.containers.create("base", name="c")
    with pytest.raises(InUse, match="used by container c"):
        store.images.remove("base")
    store.containers.remove("c")
    store.images.tag("base", "other:1")
    assert store.images.remove("base").untagged == ["base:latest"]  # only untags
    removed = store.images.remove("other:1")
    assert removed.layers == [layer_id]
    assert store.layers.list() == [] and store.images.list() == [] and os.listdir(store.layout.links) == []


def test_failed_import_leaves_the_store_as_it_was(store, rootfs, tmp_path):
    store.images.import_rootfs(str(rootfs), tag="base")
    before = tree_snapshot(store.layout.root)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(OverlayctlError):
        store.images.import_rootfs(str(bad), tag="bad")
    with pytest.raises(OverlayctlError):
        store.layers.create(io.BytesIO(b""))
    after = tree_snapshot(store.layout.root)
    assert {k: v for k, v in after.items() if not k.startswith("staging")} == {
        k: v for k, v in before.items() if not k.startswith("staging")
    }
    assert os.listdir(store.layout.staging) == []


def test_interrupted_work_is_swept(store, rootfs):
    store.images.import_rootfs(str(rootfs), tag="base")
    dead = f"{store.layout.staging}/99999999-deadbeef"
    os.makedirs(f"{dead}/diff/etc")
    os.symlink("../layers/0000/diff", f"{store.layout.links}/dangling00")
    store.images.tag("base", "again")
    assert not os.path.exists(dead)
    assert not os.path.lexists(f"{store.layout.links}/dangling00")


def test_killed_import_leaves_nothing(store, rootfs, tmp_path):
    """SIGKILL in the middle of an import: the next command cleans up."""
    store.images.import_rootfs(str(rootfs), tag="base")
    before = set(tree_snapshot(store.layout.root))
    big = tmp_path / "big"
    big.mkdir()
    for i in range(200):
        (big / f"f{i}").write_bytes(os.urandom(256 * 1024))
    code = (
        "import sys; from overlayctl import LayerStore;"
        f"LayerStore({store.layout.root!r}, {store.layout.run_root!r}).import_image({str(big)!r}, tag='big')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        # Kill it once it has started writing into staging.
        for _ in range(500):
            if os.path.isdir(store.layout.staging) and os.listdir(store.layout.staging):
                break
            proc.wait(timeout=0.01) if proc.poll() is not None else __import__("time").sleep(0.01)
        proc.kill()
    finally:
        proc.wait()
    store.images.tag("base", "swept")  # any mutation sweeps
    assert os.listdir(store.layout.staging) == []
    assert_consistent(store)
    if "big:latest" not in store.images.tags():  # killed before it published anything
        after = {k for k in tree_snapshot(store.layout.root) if not k.startswith("staging")}
        assert {k for k in after - before if ".tmp-" not in k} <= {"tags.json"}


def test_concurrent_creates_are_serialised(store, tmp_path):
    sources = []
    for i in range(4):
        d = tmp_path / f"src{i}"
        d.mkdir()
        (d / "f").write_text("same content")
        sources.append(str(d))
    code = (
        "import sys; from overlayctl import LayerStore;"
        f"s = LayerStore({store.layout.root!r}, {store.layout.run_root!r});"
        "print(s.images.import_rootfs(sys.argv[1], tag='t' + sys.argv[2]).layers[0])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, src, str(i)], stdout=subprocess.PIPE, text=True)
        for i, src in enumerate(sources)
    ]
    outputs = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1 and len(store.layers.list()) == 1
    assert len(store.images.tags()) == 4


def test_store_on_overlay_is_refused(tmp_path):
    """An upper cannot live on overlayfs: the store says so and names the fix."""
    from overlayctl import LayerStore
    from overlayctl.kernel import mount as kmount
    from overlayctl.plan.mountplan import MountPlan

    for d in ("lower", "upper", "work", "merged"):
        (tmp_path / d).mkdir()
    plan = MountPlan(
        lowers=(str(tmp_path / "lower"),),
        upper=str(tmp_path / "upper"),
        work=str(tmp_path / "work"),
        target=str(tmp_path / "merged"),
    )
    kmount.apply(plan)
    try:
        store = LayerStore(root=str(tmp_path / "merged" / "store"), run_root=str(tmp_path / "run"))
        with pytest.raises(StoreError, match="on an overlay filesystem") as caught:
            store.images.import_rootfs(str(tmp_path / "lower"), tag="x")
        assert "choose another --root" in caught.value.format()
    finally:
        kmount.unmount(str(tmp_path / "merged"))


@pytest.mark.parametrize(
    "name",
    [
        "dotdot",
        "absolute",
        "symlink-parent-absolute",
        "symlink-then-hardlink",
        "hardlink-dotdot",
        "hardlink-absolute",
        "forged-opaque",
    ],
)
def test_hostile_import_leaves_store_and_host_alone(store, rootfs, tmp_path, name):
    """Through the store: refused, nothing outside the layer, nothing half-made inside."""
    from overlayctl.errors import UnsafeArchive

    from ..tarbuild import build_tar
    from .test_archive import HOSTILE

    store.images.import_rootfs(str(rootfs), tag="base")
    before = tree_snapshot(store.layout.root)
    canary = tmp_path / "canary"
    canary.write_text("canary\n")
    tar = tmp_path / "hostile.tar"
    tar.write_bytes(build_tar([("ok", "file", b"fine")] + HOSTILE[name](str(tmp_path))))
    with pytest.raises(UnsafeArchive):
        store.images.import_rootfs(str(tar), tag="evil")
    assert canary.read_text() == "canary\n" and not (tmp_path / "escape").exists()
    after = tree_snapshot(store.layout.root)
    strip = lambda snap: {k: v for k, v in snap.items() if not k.startswith("staging")}  # noqa: E731
    assert strip(after) == strip(before) and os.listdir(store.layout.staging) == []
    assert "evil:latest" not in store.images.tags()


@pytest.mark.parametrize("api", ["new", "classic"])
def test_store_root_with_comma_colon_backslash(tmp_path, rootfs, api):
    """Paths holding , : and \\ are escaped on the way in and decoded on the way out."""
    from overlayctl import LayerStore
    from overlayctl.kernel.mount import MountApi

    from ..conftest import _cleanup_store

    store = LayerStore(root=str(tmp_path / "odd,dir:with\\chars" / "root"), run_root=str(tmp_path / "run"))
    try:
        store.images.import_rootfs(str(rootfs), tag="base")
        ctr = store.containers.create("base", name="c")
        store.containers.mount("c", host=True, api=MountApi(api))
        merged = store.layout.merged(ctr.id)
        assert open(f"{merged}/etc/motd").read() == "welcome\n"
        open(f"{merged}/new", "w").write("x")
        assert os.path.exists(f"{store.layout.upper(ctr.id)}/new")
        (report,) = [m for m in store.mounts.list() if m.target == merged]
        assert report.upper.path == store.layout.upper(ctr.id)
        assert report.work.store == {"kind": "work", "container": ctr.id, "name": "c"}
        assert [e.store["kind"] for e in report.lowers] == ["init", "layer"]
    finally:
        _cleanup_store(store)


def test_kernel_refusal_carries_the_kernels_text(store, rootfs):
    from overlayctl.errors import KernelError

    store.images.import_rootfs(str(rootfs), tag="base")
    store.containers.create("base", name="c", options=["userxattr", "metacopy=on"])
    with pytest.raises(KernelError) as caught:
        store.containers.mount("c", host=True)
    assert "refused" in caught.value.message and caught.value.errno
    assert "conflicting options" in caught.value.message  # the kernel log's own words
    assert store.containers.get("c").mounted is None


def test_not_root_is_a_clear_error(tmp_path):
    """As an unprivileged user, a mount fails with one line that says why."""
    for d in ("a", "b", "t"):
        (tmp_path / d).mkdir()
    os.chmod(tmp_path, 0o755)
    from ..cli import overlayctl_cmd, run_as_nobody

    lowers = ["--lower", str(tmp_path / "a"), "--lower", str(tmp_path / "b")]
    result = run_as_nobody(overlayctl_cmd(str(tmp_path / "root"), None, "mount", *lowers, str(tmp_path / "t")))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and "root" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_commit_past_the_layer_limit_is_refused(store, tmp_path):
    from overlayctl.errors import TooManyLayers

    src = tmp_path / "src"
    src.mkdir()
    parent = None
    for i in range(499):
        (src / "f").write_text(str(i))
        parent = store.layers.create(str(src), parent=parent).id
    store.images.create(parent, tag="deep")
    store.containers.create("deep", name="c")  # 499 layers + init = 500 lowers
    with pytest.raises(TooManyLayers, match="500 layers"):
        store.containers.commit("c")


@pytest.mark.parametrize("where", ["host", "pinned"], ids=["host-namespace", "pinned-namespace"])
def test_removal_never_deletes_below_a_mount(store, rootfs, where):
    """rm renames into trash under the lock and deletes only what nothing is mounted below, in any namespace."""
    from overlayctl.errors import InUse

    store.images.import_rootfs(str(rootfs), tag="base")
    other = store.containers.create("base", name="other")
    victim = store.containers.create("base", name="victim")
    target = f"{store.layout.upper(victim.id)}/mnt"
    os.mkdir(target)
    enter = []
    if where == "pinned":
        store.containers.mount("other")  # a mount namespace overlayctl pinned
        enter = ["nsenter", f"--mount={store.layout.pin(other.id)}"]
    subprocess.run([*enter, "mount", "-t", "tmpfs", "tmpfs", target], check=True)
    subprocess.run([*enter, "sh", "-c", f"echo precious > {target}/data"], check=True)

    def tmpfs_under(path: str) -> list[str]:
        found = subprocess.run(
            [*enter, "findmnt", "-rn", "-o", "TARGET", "-t", "tmpfs"], capture_output=True, text=True
        )
        return [t for t in found.stdout.split() if t.startswith(path + "/")]

    try:
        with pytest.raises(InUse, match="still mounted below it"):
            store.containers.remove("victim")
        (moved,) = tmpfs_under(store.layout.trash)  # the container went to the trash, its mount with it
        out = subprocess.run([*enter, "cat", f"{moved}/data"], capture_output=True, text=True).stdout
        assert out == "precious\n"
        assert [p.message for p in store.system.check().problems] == ["undeleted trash"]
    finally:
        for point in tmpfs_under(store.layout.root):
            subprocess.run([*enter, "umount", "-l", point], check=False)
    assert store.system.check(repair=True).problems == []
    assert os.listdir(store.layout.trash) == []
    store.containers.unmount("other")
