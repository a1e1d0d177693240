"""The store's rules without root: tags, references, removal, check, transactions, the format.

The two questions the store asks the kernel (is the backing filesystem fit,
is anything mounted below a removed directory) are injected, and layers are
filled with plain files instead of extracted tars (extraction chowns, which
needs root).  Each bug found under crashes, concurrency and damage has a row
or a test here; its docstring names the bug.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from overlayctl import LayerStore
from overlayctl.errors import InUse, NotFound, StoreError
from overlayctl.kernel.probe import BackingFs
from overlayctl.store import atomic
from overlayctl.store import containers as ctrs
from overlayctl.store import layers as lyrs
from overlayctl.store.ids import sha256_digest
from overlayctl.store.layers import LayerFiles
from overlayctl.store.records import ImageRecord, dump_json


def _fit(root: str) -> BackingFs:
    return BackingFs(root, "test", 0, d_type=True, trusted_xattr=True, whiteout=True)


@pytest.fixture
def mounted():
    """Names of directories the fake kernel calls mount points, wherever they are: set by a test."""
    return set()


@pytest.fixture
def store(tmp_path, mounted):
    def mounted_below(path: str) -> list[str]:
        return [d for d, _, _ in os.walk(path) if os.path.basename(d) in mounted]

    return LayerStore(
        str(tmp_path / "root"),
        str(tmp_path / "run"),
        lock_timeout=2,
        backing_probe=_fit,
        mounted_below=mounted_below,
    )


def add_layer(store: LayerStore, text: str, parent: str | None = None) -> lyrs.LayerRecord:
    """A layer holding one file, staged and published as the API does."""

    def fill(diff: str) -> LayerFiles:
        with open(f"{diff}/file", "w") as f:
            f.write(text)
        return LayerFiles(sha256_digest(text.encode()), len(text), 2, lyrs.content_digest(diff))

    store._ctx.ensure_root()
    staged = lyrs.stage_layer(store.layout, fill)
    with store._ctx.transaction("test layer") as txn:
        record, _ = lyrs.publish_layer(txn, staged, parent=parent)
    return record


def add_image(store: LayerStore, *texts: str, tag: str | None = None) -> ImageRecord:
    parent = None
    diff_ids = []
    for text in texts:
        layer = add_layer(store, text, parent)
        parent, diff_ids = layer.id, diff_ids + [layer.diff_id]
    with store._ctx.transaction("test image") as txn:
        return store.images.publish(txn, ImageRecord.build(diff_ids), tag=tag)


def problems(store: LayerStore) -> list[str]:
    return [p.message for p in store.system.check().problems]


# -- tags and references --------------------------------------------------------


def test_references_by_tag_default_tag_and_prefix(store):
    image = add_image(store, "a", tag="app:1")
    store.images.tag("app:1", "app")
    assert store.images.get("app").id == store.images.get("app:latest").id == image.id
    assert store.images.get(image.id[7:19]).id == image.id
    assert sorted(store.images.tags(image.id)) == ["app:1", "app:latest"]
    with pytest.raises(NotFound, match="no such image: nope"):
        store.images.get("nope")


def test_removing_one_of_several_tags_only_untags(store):
    image = add_image(store, "a", tag="app:1")
    store.images.tag("app:1", "app:2")
    removal = store.images.remove("app:1")
    assert (removal.untagged, removal.deleted) == (["app:1"], [])
    assert store.images.get("app:2").id == image.id


def test_removal_keeps_layers_other_images_use(store):
    base = add_image(store, "base", tag="base")
    child = add_image(store, "base", "top", tag="child")
    removal = store.images.remove("child")
    assert removal.deleted == [child.id] and removal.layers == [child.layers[1]]
    assert store.layers.get(base.layers[0]).id == base.layers[0]
    with pytest.raises(InUse, match="used by image base"):
        store.layers.remove(base.layers[0])
    assert problems(store) == []


def test_image_in_use_by_a_container_is_kept(store):
    add_image(store, "a", tag="app")
    store.containers.create("app", name="c")
    with pytest.raises(InUse, match="used by container c"):
        store.images.remove("app")
    store.containers.remove("c")
    assert store.images.remove("app").deleted


def test_image_rm_reads_each_layer_record_once(store, monkeypatch):
    """image rm of an N-layer image did N reads of every layer record (quadratic)."""
    texts = [f"layer {n}" for n in range(60)]
    add_image(store, *texts, tag="deep")
    reads = []
    real = lyrs.load_layer
    monkeypatch.setattr(lyrs, "load_layer", lambda layout, layer_id: reads.append(layer_id) or real(layout, layer_id))
    removal = store.images.remove("deep")
    assert len(removal.layers) == 60
    assert len(reads) <= 2 * 60, f"{len(reads)} layer record reads for 60 layers"


# -- listings race removals ---------------------------------------------------------


def test_listing_skips_a_container_removed_meanwhile(store, monkeypatch):
    """container ls listed containers/ and failed the whole listing on one removed in between."""
    add_image(store, "a", tag="app")
    kept = store.containers.create("app", name="kept")
    gone = store.containers.create("app", name="gone")
    listed = ctrs.container_ids(store.layout)
    store.containers.remove("gone")
    monkeypatch.setattr(ctrs, "container_ids", lambda layout: listed)  # the listing was taken before the rm
    assert [s.record.id for s in store.containers.list()] == [kept.id]
    assert gone.id in listed


def test_listings_skip_damaged_records_with_a_warning(store):
    """A damaged image record gave a traceback in image ls, image inspect, container create."""
    good = add_image(store, "a", tag="good")
    bad = add_image(store, "b", tag="bad")
    with open(store.layout.image_json(bad.id), "wb") as f:
        f.write(b"{not json")
    with pytest.warns(UserWarning, match="damaged record"):
        assert [i.id for i in store.images.list()] == [good.id]
    with pytest.raises(StoreError, match="damaged record"):
        store.images.get("bad")
    with pytest.raises(StoreError, match="damaged record"):
        store.containers.create("bad")
    store.containers.create("good", name="c")  # the others keep working
    assert any(bad.id[7:] in p.path for p in store.system.check().problems)


@pytest.mark.parametrize(
    "content", [b"\0" * 64, b"garbage", b'["a list"]', b'{"x:1": 5}'], ids=["zero-filled", "text", "list", "bad-value"]
)
def test_a_damaged_tags_json_stops_only_what_needs_tags(store, content):
    """A zero-filled tags.json (power loss) gave UnicodeDecodeError tracebacks nearly everywhere."""
    image = add_image(store, "a", tag="app")
    store.containers.create(image.id[7:19], name="c")
    with open(store.layout.tags, "wb") as f:
        f.write(content)
    assert [s.record.name for s in store.containers.list()] == ["c"]  # needs no tags
    assert store.images.get(image.id[7:19]).id == image.id  # IDs still resolve
    with pytest.raises(StoreError, match="damaged record .*tags.json"):
        store.images.get("app")
    report = store.system.check(repair=True)
    assert [p.repair for p in report.repaired] == ["move-aside"] and report.problems == []
    assert any(n.startswith("tags.json.damaged-") for n in os.listdir(store.layout.root))


# -- check --------------------------------------------------------------------------


def test_check_restores_a_deleted_short_link(store):
    """check did not notice a deleted l/ short link; the classic mount then failed."""
    image = add_image(store, "a", tag="app")
    record = store.layers.get(image.layers[0])
    os.unlink(store.layout.link(record.link))
    assert problems(store) == [f"short link of layer {record.id[7:19]} is missing"]
    store.system.check(repair=True)
    assert os.readlink(store.layout.link(record.link)) == f"../layers/{record.id[7:]}/diff"
    assert problems(store) == []


def test_check_finds_temporaries_tags_and_addresses_that_name_nothing(store):
    """A failed write left tags.json.tmp-<pid>, which check did not report."""
    image = add_image(store, "a", tag="app")
    tmp = f"{store.layout.tags}.tmp-999999999"
    with open(tmp, "w") as f:
        f.write("{")
    tags = json.loads(open(store.layout.tags).read())
    with open(store.layout.tags, "wb") as f:
        f.write(dump_json({**tags, "ghost:1": "sha256:" + "0" * 64}))
    with open(store.layout.network_json, "wb") as f:
        f.write(dump_json({"bridge": "ovlctl0", "subnet": "10.213.0.0/24", "addresses": {"10.213.0.2": "f" * 64}}))
    found = {p.repair for p in store.system.check().problems}
    assert found == {"remove", "untag", "release"}
    assert store.system.check(repair=True).problems == []
    assert not os.path.exists(tmp) and store.images.tags() == {"app:latest": image.id}


def test_check_verifies_content(store):
    image = add_image(store, "a", tag="app")
    assert store.system.check(verify_content=True).problems == []
    with open(f"{store.layout.diff(image.layers[0])}/file", "w") as f:
        f.write("changed behind the store's back")
    messages = [p.message for p in store.system.check(verify_content=True).problems]
    assert any("layer files hash to" in m for m in messages)


def test_a_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    """write_atomic on a full disk left <file>.tmp-<pid> behind."""

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        atomic.write_atomic(str(tmp_path / "tags.json"), b"{}")
    assert os.listdir(tmp_path) == []


# -- transactions -------------------------------------------------------------------


def test_an_interrupted_creation_is_rolled_back(store):
    """A kill after the layer was published and before the image: the next change undoes it."""
    add_image(store, "a", tag="app")
    with pytest.raises(KeyboardInterrupt):
        with store._ctx.transaction("image import") as txn:
            staged = lyrs.stage_layer(store.layout, lambda d: LayerFiles(sha256_digest(b"x"), 0, 1, "x"))
            layer, new = lyrs.publish_layer(txn, staged, parent=None)
            assert new and os.path.isdir(store.layout.layer_dir(layer.id))
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after this line runs
    assert not os.path.exists(store.layout.layer_dir(layer.id)) and problems(store) == []


def test_a_killed_transaction_is_finished_by_the_next(store):
    """A kill between the steps of image rm left a layer no image used, and check called it fine."""
    image = add_image(store, "a", tag="app")
    layer = store.layers.get(image.layers[0])
    journal = {
        "verb": "image rm",
        "on_crash": "rollforward",
        "pid": 999999999,
        "paths": [os.path.relpath(p, store.layout.root) for p in (store.layout.image_json(image.id),)]
        + [f"layers/{layer.id[7:]}", f"l/{layer.link}"],
        "tags": {"app:latest": None},
    }
    os.unlink(store.layout.image_json(image.id))  # the kill came after the first rename
    with open(store.layout.journal, "wb") as f:
        f.write(dump_json(journal))
    assert problems(store) == ["an interrupted transaction", f"tag app:latest names a missing image {image.id}"]
    assert [p.repair for p in store.system.check(repair=True).repaired] == ["recover", "untag"]
    assert store.layers.list() == [] and store.images.tags() == {} and problems(store) == []


def test_publishing_an_image_needs_all_its_layers(store):
    layer = add_layer(store, "a")
    record = ImageRecord.build([layer.diff_id, sha256_digest(b"missing")])
    with pytest.raises(NotFound, match="is not in the store"):
        with store._ctx.transaction("image create") as txn:
            store.images.publish(txn, record, tag="broken")
    assert store.images.list() == [] and store.images.tags() == {}


def test_store_functions_refuse_to_change_the_disk_unlocked(store):
    from overlayctl.store.transaction import ROLLBACK, Transaction

    with pytest.raises(AssertionError, match="outside the store lock"):
        Transaction(store.layout, store.lock, "sneaky", ROLLBACK)


def test_removal_never_deletes_below_a_mount(store, mounted):
    """Removal renames into trash under the lock, and deletes only what nothing is mounted below."""
    add_image(store, "a", tag="app")
    ctr = store.containers.create("app", name="c")
    keep = f"{store.layout.upper(ctr.id)}/mnt/data"
    os.makedirs(os.path.dirname(keep))
    open(keep, "w").write("precious")
    mounted.add("mnt")  # the container's upper/mnt is a mount point
    with pytest.raises(InUse, match="still mounted below it"):
        store.containers.remove("c")
    (trash,) = os.listdir(store.layout.trash)
    assert open(next(_files(f"{store.layout.trash}/{trash}", "data"))).read() == "precious"
    with pytest.raises(NotFound):
        store.containers.get("c")  # the container itself is gone from the store
    mounted.clear()
    assert store.system.check(repair=True).problems == [] and os.listdir(store.layout.trash) == []


def _files(top: str, name: str):
    for directory, _, files in os.walk(top):
        if name in files:
            yield f"{directory}/{name}"


# -- the lock and the format ----------------------------------------------------------


def _hold_lock(path: str, seconds: float) -> subprocess.Popen:
    code = (
        "import sys, time; from overlayctl.store.lock import StoreLock\n"
        f"with StoreLock({path!r}):\n    print('held', flush=True); time.sleep({seconds})\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_held_lock_fails_with_the_holders_pid_and_command_and_readers_go_on(store):
    add_image(store, "a", tag="app")
    holder = _hold_lock(store.layout.lock, 30)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match=rf"locked by pid {holder.pid} \(.*StoreLock.*\) for more than 2 s"):
            store.images.tag("app", "other")
        assert 1.9 < time.monotonic() - started < 10
        started = time.monotonic()
        assert [i.id for i in store.images.list()] and store.containers.list() == []
        assert time.monotonic() - started < 1, "readers must not wait for the lock"
    finally:
        holder.kill()
        holder.wait()


def test_a_newer_store_format_is_refused(store):
    add_image(store, "a")
    with open(store.layout.store_json, "wb") as f:
        f.write(dump_json({"format": 99}))
    with pytest.raises(StoreError, match="has format 99; this overlayctl reads formats up to 2"):
        LayerStore(store.layout.root, store.layout.run_root)


def test_a_format_1_store_is_migrated_on_its_first_change(store):
    image = add_image(store, "a", tag="app")
    path = store.layout.layer_json(image.layers[0])
    old = json.loads(open(path).read())
    for key in ("inodes", "content_digest"):
        del old[key]
    with open(path, "wb") as f:
        f.write(dump_json(old))
    with open(store.layout.store_json, "wb") as f:
        f.write(dump_json({"format": 1}))
    again = LayerStore(store.layout.root, store.layout.run_root, backing_probe=_fit)
    assert again.layers.get(image.layers[0]).content_digest == ""  # reads do not migrate
    again.images.tag("app", "app:2")
    assert json.loads(open(store.layout.store_json).read())["format"] == 2
    migrated = again.layers.get(image.layers[0])
    assert migrated.inodes == 2 and migrated.content_digest.startswith("sha256:")


def test_references_with_a_registry_host_are_tags_like_any_other(store):
    """image rm of a tag with a host deleted the whole image instead of untagging it."""
    image = add_image(store, "a", tag="app:1")
    assert store.images.tag("app:1", "127.0.0.1:5000/team/app") == "127.0.0.1:5000/team/app:latest"
    assert store.images.tag("app:1", "docker.io/library/app:2") == "app:2"  # Docker Hub's familiar form
    assert store.images.get("127.0.0.1:5000/team/app").id == image.id
    removal = store.images.remove("127.0.0.1:5000/team/app:latest")
    assert (removal.untagged, removal.deleted) == (["127.0.0.1:5000/team/app:latest"], [])
    assert sorted(store.images.tags(image.id)) == ["app:1", "app:2"]
