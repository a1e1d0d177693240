"""SIGKILL at every step of a verb, deterministically: strace kills it at its Nth rename, unlink, symlink or mkdir.

Eight verbs: the seven of test_crash's and ``image load`` (of a two-layer
archive that ``image save`` wrote).  The random kills of test_crash find
what a timer happens to hit; these hit
each step in turn, which is how a kill between the steps of ``image rm``
was found to leave a layer no image used while ``check --repair`` called the
store consistent.  After each kill the store must be consistent or made so
by ``check --repair``, the objects made before must be intact, and the
killed verb's object whole or absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from overlayctl import LayerStore
from overlayctl.errors import NotFound

from ..cli import store_cmd

pytestmark = pytest.mark.root

SYSCALLS = ("rename", "unlink", "symlink", "mkdir")
#: A verb never takes more than this many of one syscall; the loop stops at the first clean run.
MAX_STEPS = 12

if shutil.which("strace") is None:
    pytest.skip("strace is not installed (make test installs it)", allow_module_level=True)


def _killed_at(store, syscall: str, step: int, *args: str) -> subprocess.CompletedProcess:
    inject = f"inject={syscall}:signal=KILL:when={step}"
    cmd = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}", "-e", inject, *store_cmd(store, *args)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)


def _check_then_repair(store) -> bool:
    """check; every problem must be repairable; after --repair, none is left.  Whether repair was needed."""
    found = store.system.check().problems
    assert all(p.garbage for p in found), found
    if found:
        store.system.check(repair=True)
    assert store.system.check().problems == []
    return bool(found)


def _intact(store, images: dict[str, str]) -> None:
    """Each image still resolves with all its layers, whose files hash as recorded."""
    for tag, image_id in images.items():
        assert store.images.get(tag).id == image_id
    assert store.system.check(verify_content=True).problems == []


def _whole_or_absent(store, tag: str) -> None:
    try:
        image = store.images.get(tag)
    except NotFound:
        return
    for layer in image.layers:
        assert os.path.isdir(store.layout.diff(layer))


VERBS = {
    "image import": (("image", "import", "{rootfs2}", "--tag", "new:1"), "new:1"),
    "image import (dedup)": (("image", "import", "{rootfs}", "--tag", "new:1"), "new:1"),
    "image rm": (("image", "rm", "gone:1"), None),
    "layer create": (("layer", "create", "--from", "{rootfs2}"), None),
    "container create": (("container", "create", "base:1", "--name", "new"), None),
    "container commit": (("container", "commit", "c", "new:1"), "new:1"),
    "container rm": (("container", "rm", "c"), None),
    "image load": (("image", "load", "-i", "{archive}"), "new:1"),
}


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_kill_at_any_step_leaves_a_store_that_check_makes_whole(rootfs, tmp_path, verb, capsys):
    rootfs2 = tmp_path / "rootfs2"
    shutil.copytree(rootfs, rootfs2, symlinks=True)
    (rootfs2 / "etc" / "new").write_text("another layer\n")
    args, made = VERBS[verb]
    archive = tmp_path / "new.tar"
    if "{archive}" in args:
        _archive_of(rootfs, rootfs2, archive, tmp_path / "maker")
    args = tuple(a.format(rootfs=rootfs, rootfs2=rootfs2, archive=archive) for a in args)
    kills = repaired = 0
    for syscall in SYSCALLS:
        for step in range(1, MAX_STEPS + 1):
            store = LayerStore(str(tmp_path / f"{syscall}-{step}"), str(tmp_path / "run"))
            before = _setup(store, rootfs, rootfs2)
            result = _killed_at(store, syscall, step, *args)
            if result.returncode == 0:
                break
            assert result.returncode in (-9, 137), (syscall, step, result.returncode, result.stderr)
            kills += 1
            repaired += _check_then_repair(store)
            _intact(store, {t: i for t, i in before.items() if t not in args})
            if made:
                _whole_or_absent(store, made)
    with capsys.disabled():
        print(f"\nkill points[{verb}]: killed at {kills} steps; {repaired} needed check --repair")
    assert kills >= 2, f"{verb}: strace killed it only {kills} times"


def _archive_of(rootfs, rootfs2, archive, where) -> None:
    """new:1, two layers (rootfs, then rootfs2's extra file), saved by image save from a store of its own."""
    maker = LayerStore(str(where / "root"), str(where / "run"))
    base = maker.images.import_rootfs(str(rootfs), tag="base:1")
    ctr = maker.containers.create(base.id, name="m")
    shutil.copy(rootfs2 / "etc" / "new", f"{maker.layout.upper(ctr.id)}/new")
    maker.containers.commit("m", tag="new:1")
    with open(archive, "wb") as out:
        maker.images.save(["new:1"], out)


def _setup(store, rootfs, rootfs2) -> dict[str, str]:
    """base:1, gone:1 (a layer of its own) and a container c of base:1 with a file in its upper."""
    images = {
        tag: store.images.import_rootfs(str(src), tag=tag).id for tag, src in (("base:1", rootfs), ("gone:1", rootfs2))
    }
    ctr = store.containers.create("base:1", name="c")
    with open(f"{store.layout.upper(ctr.id)}/added", "w") as f:
        f.write("upper file\n")
    return images
