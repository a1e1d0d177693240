"""A full disk: the store on a small loop-mounted ext4.

* An import bigger than the filesystem fails with one line on stderr, exit
  code 1 and no traceback; check is clean afterwards; the free space is what
  it was (within a few blocks); and a small import then works.
* A tags.json write that fails on a full disk (the disk is filled up to
  ENOSPC first, then ``image tag``) leaves tags.json as it was and no
  ``tags.json.tmp-*`` file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import subprocess

import pytest

from ._stress import StressStore, assert_clean, check, make_source

pytestmark = pytest.mark.root

FS_MIB = 64
BIG_MIB = 100  # of incompressible data: does not fit
SLACK_BLOCKS = 32  # free space may differ by this much (directories keep their size)


@pytest.fixture
def small_fs(tmp_path):
    """A FS_MIB ext4 on a loop device, mounted at tmp_path/mnt; always unmounted and detached."""
    image = tmp_path / "fs.img"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(FS_MIB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    found = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"no loop device: {found.stderr.strip()}")
    device = found.stdout.strip()
    try:
        subprocess.run(["mount", device, str(mnt)], check=True, capture_output=True)
        store = StressStore(tmp_path, root=mnt / "store", run_root=tmp_path / "run")
        store.own_mounts.add(str(mnt))
        try:
            yield store, mnt
        finally:
            store.cleanup()
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def free_blocks(path) -> tuple[int, int]:
    """(free blocks, block size) of the filesystem, after a sync (ext4 frees blocks at commit)."""
    os.sync()
    st = os.statvfs(path)
    return st.f_bfree, st.f_frsize


def test_import_that_does_not_fit(small_fs, tmp_path):
    store, mnt = small_fs
    cli = store.cli
    cli.ok("image", "import", str(make_source(tmp_path / "small", random.Random(1), "small", 4096)))
    assert_clean(cli)
    before, block = free_blocks(mnt)

    big = tmp_path / "big"
    (big / "data").mkdir(parents=True)
    for i in range(BIG_MIB // 4):
        (big / "data" / f"chunk{i}").write_bytes(os.urandom(4 << 20))
    result = cli.run("image", "import", str(big), "--tag", "big")

    # Every property is checked, and all that fail are reported together.
    wrong = []
    if result.traceback or not result.clean_error:
        wrong.append("the import did not fail with one line and exit code 1:\n" + result.describe())
    elif "space" not in result.stderr.lower():
        wrong.append("the error does not say the disk is full:\n" + result.describe())
    checked, report = check(cli)
    if report["problems"]:
        wrong.append("check is not clean after the failed import:\n" + checked.describe())
    after, _ = free_blocks(mnt)
    if abs(after - before) > SLACK_BLOCKS:
        wrong.append(f"free space changed by {(before - after) * block} bytes ({before} -> {after} blocks of {block})")
    images = cli.json("image", "ls", "--json")
    if any("big:latest" in i["tags"] for i in images):
        wrong.append(f"the failed import left an image: {images}")
    again = cli.run("image", "import", str(make_source(tmp_path / "small2", random.Random(2), "again", 4096)))
    if not again.ok or again.traceback:
        wrong.append("a small import after the failed one does not work:\n" + again.describe())
    if wrong:
        pytest.fail("\n\n".join(wrong), pytrace=False)
    assert_clean(cli, "after a small import: ")


def fill(path) -> int:
    """Write a file until the filesystem is full (ENOSPC), down to single bytes; bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 64 << 10, 4096, 512, 1):
            chunk = b"\xa5" * size
            while True:
                try:
                    n = os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < size:
                    break
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return written


def test_failed_tags_write_leaves_no_temp_file(small_fs, tmp_path):
    store, mnt = small_fs
    cli = store.cli
    src = make_source(tmp_path / "src", random.Random(3), "base", 4096)
    image_id = cli.ok("image", "import", str(src), "--tag", "base").stdout.strip()
    tags_path = os.path.join(store.root, "tags.json")
    with open(tags_path, "rb") as f:
        tags_before = f.read()

    filler = mnt / "filler"
    fill(filler)
    try:
        result = cli.run("image", "tag", "base", "other:1")
        leftovers = sorted(n for n in os.listdir(store.root) if n.startswith("tags.json.tmp"))
        with open(tags_path, "rb") as f:
            tags_after = f.read()
    finally:
        os.unlink(filler)
    # The disk was full (ENOSPC on our own writes): the tag cannot be written.
    assert result.returncode != 0, "image tag succeeded on a full disk: the test did not fill it\n" + result.describe()
    wrong = []
    if result.traceback or not result.clean_error:
        wrong.append("the tag did not fail with one line and exit code 1:\n" + result.describe())
    if leftovers:
        wrong.append(f"a failed write of tags.json left {leftovers} in the store root")
    if tags_after != tags_before:
        wrong.append("tags.json changed though the tag failed")
    if wrong:
        pytest.fail("\n\n".join(wrong), pytrace=False)

    _, report = check(cli)
    assert report["problems"] == [], report
    cli.ok("image", "tag", "base", "other:1")  # with space again, it works
    tags = {t: i["id"] for i in cli.json("image", "ls", "--json") for t in i["tags"]}
    assert tags.get("base:latest") == image_id and tags.get("other:1") == image_id, tags
