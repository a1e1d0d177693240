"""Commit: the upper becomes a layer holding only the changes, and a new image."""

from __future__ import annotations

import os
import stat

import pytest

from ..rootfs import files_of

pytestmark = pytest.mark.root


def test_commit_and_rollback(store, rootfs):
    base = store.import_image(str(rootfs), tag="app:1")
    ctr = store.create_container("app:1", name="c")
    store.mount("c", host=True)
    merged = store.layout.merged(ctr.id)
    with open(f"{merged}/etc/motd", "w") as f:
        f.write("v2\n")
    os.unlink(f"{merged}/data/old.txt")
    open(f"{merged}/data/new.txt", "w").write("new\n")

    image = store.commit("c", tag="app:2", message="motd v2")
    assert image.parent == base.id and image.layers[:-1] == base.layers
    layer = store.layer(image.layers[-1])
    assert layer.parent == base.layers[-1] and layer.comment == "motd v2"
    diff = store.layout.diff(layer.id)
    assert files_of(diff) == {"etc", "etc/motd", "data", "data/old.txt", "data/new.txt"}
    assert stat.S_ISCHR(os.lstat(f"{diff}/data/old.txt").st_mode)
    # The container keeps working, still mounted.
    assert open(f"{merged}/etc/motd").read() == "v2\n"
    store.unmount("c")

    store.create_container("app:2", name="new")
    store.create_container("app:1", name="old")
    store.mount("new", host=True)
    store.mount("old", host=True)
    new, old = (
        store.layout.merged(store.container("new").record.id),
        store.layout.merged(store.container("old").record.id),
    )
    assert open(f"{new}/etc/motd").read() == "v2\n" and not os.path.exists(f"{new}/data/old.txt")
    assert open(f"{old}/etc/motd").read() == "welcome\n" and os.path.exists(f"{old}/data/old.txt")
    assert [row["comment"] for row in store.image_history("app:2")][0] == "motd v2"
    tree = store.image_tree()
    assert len(tree) == 1 and tree[0]["children"][0]["tags"] == ["app:2"]


def test_commit_is_deterministic_and_deduplicated(store, rootfs):
    store.import_image(str(rootfs), tag="app")
    for name in ("a", "b"):
        ctr = store.create_container("app", name=name)
        os.makedirs(f"{store.layout.upper(ctr.id)}/srv")
        with open(f"{store.layout.upper(ctr.id)}/srv/x", "w") as f:
            f.write("same\n")
        os.utime(f"{store.layout.upper(ctr.id)}/srv/x", (1, 1))
        os.utime(f"{store.layout.upper(ctr.id)}/srv", (1, 1))
        os.utime(f"{store.layout.upper(ctr.id)}", (1, 1))
    one, two = store.commit("a"), store.commit("b")
    assert one.layers[-1] == two.layers[-1]
    assert len(store.layers()) == 2


def test_commit_refuses_redirected_upper(store, rootfs):
    from overlayctl.errors import OverlayctlError

    store.import_image(str(rootfs), tag="app")
    ctr = store.create_container("app", name="c")
    os.makedirs(f"{store.layout.upper(ctr.id)}/moved")
    os.setxattr(f"{store.layout.upper(ctr.id)}/moved", "trusted.overlay.redirect", b"/opt/app")
    before = len(store.layers())
    with pytest.raises(OverlayctlError, match="redirect"):
        store.commit("c")
    assert len(store.layers()) == before and os.listdir(store.layout.staging) == []
