"""overlayctl check: records against directories; --repair removes only garbage."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.root


def test_a_clean_store_is_consistent(store, rootfs):
    store.images.import_rootfs(str(rootfs), tag="base")
    store.containers.create("base", name="c")
    assert store.system.check().to_json() == {"problems": [], "removed": []}


def test_repair_removes_garbage_and_reports_damage(store, rootfs):
    image = store.images.import_rootfs(str(rootfs), tag="base")
    root = store.layout.root
    orphan = f"{root}/layers/{'a' * 64}"
    os.makedirs(f"{orphan}/diff")
    os.symlink("../layers/gone/diff", f"{root}/l/dangling0")
    dead = f"{store.layout.staging}/999999-dead"
    os.makedirs(dead)
    alive = f"{store.layout.staging}/{os.getppid()}-busy"  # a live process's work is not garbage
    os.makedirs(alive)
    found = {p.path: p for p in store.system.check().problems}
    assert set(found) == {orphan, f"{root}/l/dangling0", dead}
    assert all(p.garbage for p in found.values())
    result = store.system.check(repair=True)
    assert {p.path for p in result.repaired} == set(found) and result.problems == []
    assert not os.path.exists(orphan) and os.path.isdir(alive)
    os.rmdir(alive)
    # Damage is reported, never guessed at: a changed image record.
    path = store.layout.image_json(image.id)
    with open(path, "ab") as f:
        f.write(b" ")
    problems = store.system.check(repair=True).problems
    assert [p.message for p in problems] == ["its sha256 is not its name: the record was changed"]
    assert os.path.exists(path)
