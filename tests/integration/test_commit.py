"""Commit: the upper becomes a layer holding only the changes, and a new image."""

from __future__ import annotations

import os
import stat

import pytest

from testkit.rootfs import files_of

pytestmark = pytest.mark.root


def test_commit_and_rollback(store, rootfs):
    base = store.images.import_rootfs(str(rootfs), tag="app:1")
    ctr = store.containers.create("app:1", name="c")
    store.containers.mount("c", host=True)
    merged = store.layout.merged(ctr.id)
    with open(f"{merged}/etc/motd", "w") as f:
        f.write("v2\n")
    os.unlink(f"{merged}/data/old.txt")
    open(f"{merged}/data/new.txt", "w").write("new\n")

    image = store.containers.commit("c", tag="app:2", message="motd v2")
    assert image.parent == base.id and image.layers[:-1] == base.layers
    layer = store.layers.get(image.layers[-1])
    assert layer.parent == base.layers[-1] and layer.comment == "motd v2"
    diff = store.layout.diff(layer.id)
    assert files_of(diff) == {"etc", "etc/motd", "data", "data/old.txt", "data/new.txt"}
    assert stat.S_ISCHR(os.lstat(f"{diff}/data/old.txt").st_mode)
    # The container keeps working, still mounted.
    assert open(f"{merged}/etc/motd").read() == "v2\n"
    store.containers.unmount("c")

    store.containers.create("app:2", name="new")
    store.containers.create("app:1", name="old")
    store.containers.mount("new", host=True)
    store.containers.mount("old", host=True)
    new, old = (
        store.layout.merged(store.containers.get("new").record.id),
        store.layout.merged(store.containers.get("old").record.id),
    )
    assert open(f"{new}/etc/motd").read() == "v2\n" and not os.path.exists(f"{new}/data/old.txt")
    assert open(f"{old}/etc/motd").read() == "welcome\n" and os.path.exists(f"{old}/data/old.txt")
    assert [row.comment for row in store.images.history("app:2")][0] == "motd v2"
    (base,) = [i for i in store.images.list() if i.parent is None]
    (child,) = [i for i in store.images.list() if i.parent == base.id]
    assert store.images.tags(child.id) == ["app:2"]


def test_commit_is_deterministic_and_deduplicated(store, rootfs):
    store.images.import_rootfs(str(rootfs), tag="app")
    for name in ("a", "b"):
        ctr = store.containers.create("app", name=name)
        os.makedirs(f"{store.layout.upper(ctr.id)}/srv")
        with open(f"{store.layout.upper(ctr.id)}/srv/x", "w") as f:
            f.write("same\n")
        os.utime(f"{store.layout.upper(ctr.id)}/srv/x", (1, 1))
        os.utime(f"{store.layout.upper(ctr.id)}/srv", (1, 1))
        os.utime(f"{store.layout.upper(ctr.id)}", (1, 1))
    one, two = store.containers.commit("a"), store.containers.commit("b")
    assert one.layers[-1] == two.layers[-1]
    assert len(store.layers.list()) == 2


def test_commit_refuses_redirected_upper(store, rootfs):
    from overlayctl.errors import OverlayctlError

    store.images.import_rootfs(str(rootfs), tag="app")
    ctr = store.containers.create("app", name="c")
    os.makedirs(f"{store.layout.upper(ctr.id)}/moved")
    os.setxattr(f"{store.layout.upper(ctr.id)}/moved", "trusted.overlay.redirect", b"/opt/app")
    before = len(store.layers.list())
    with pytest.raises(OverlayctlError, match="redirect"):
        store.containers.commit("c")
    assert len(store.layers.list()) == before and os.listdir(store.layout.staging) == []
