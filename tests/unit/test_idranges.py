"""ID ranges of user-namespaced containers: subuid/subgid files, allocation, ID shifting (no root).

Every test works on temporary subuid/subgid files: none touches /etc.
"""

from __future__ import annotations

import multiprocessing
import os
import struct

import pytest

from overlayctl.errors import StoreError
from overlayctl.plan.idmap import (
    OVERFLOW_ID,
    IdRange,
    check_map,
    format_map,
    mapping_for,
    oci_mappings,
    shift_to_container,
    shift_to_host,
    shift_xattr_to_container,
)
from overlayctl.store import idranges
from overlayctl.store.idranges import (
    SubIdEntry,
    allocate,
    ensure_subids,
    free_start,
    held,
    parse_subids,
    range_of,
    release,
    remove_subids,
    subid_pool,
)
from overlayctl.store.layout import StoreLayout
from overlayctl.store.lock import StoreLock

from .conftest import race

CID = [f"{i:02x}" * 32 for i in range(1, 40)]
R = IdRange(196608, 65536)


@pytest.fixture
def subids(tmp_path):
    """Paths of an empty subuid and subgid file, as keyword arguments."""
    (tmp_path / "subuid").write_text("")
    (tmp_path / "subgid").write_text("")
    return {"subuid": str(tmp_path / "subuid"), "subgid": str(tmp_path / "subgid")}


def _write(subids, uid_text: str, gid_text: str | None = None) -> None:
    with open(subids["subuid"], "w") as f:
        f.write(uid_text)
    with open(subids["subgid"], "w") as f:
        f.write(uid_text if gid_text is None else gid_text)


def _read(subids) -> tuple[str, str]:
    return tuple(open(subids[k]).read() for k in ("subuid", "subgid"))


# --- plan.idmap ---------------------------------------------------------------------


def test_mapping_and_its_text_forms():
    assert mapping_for(R) == ((0, 196608, 65536),)
    assert format_map(mapping_for(R)) == "0 196608 65536\n"
    assert oci_mappings(mapping_for(R)) == [{"containerID": 0, "hostID": 196608, "size": 65536}]


@pytest.mark.parametrize(
    "id_map",
    [(), ((0, 1000, 10), (5, 2000, 10)), ((0, 1000, 10), (20, 1005, 10)), ((0, 1, 0),), ((0, 0xFFFFFFFF, 1),)],
    ids=["empty", "inside-overlap", "outside-overlap", "zero-size", "minus-one"],
)
def test_bad_maps_are_refused(id_map):
    with pytest.raises(ValueError):
        check_map(id_map)


@pytest.mark.parametrize(
    "host, container",
    [(196608, 0), (196608 + 1000, 1000), (196608 + 65535, 65535), (196608 + 65536, OVERFLOW_ID), (0, OVERFLOW_ID)],
    ids=["start", "inside", "last", "just-after", "host-root"],
)
def test_shift_to_container(host, container):
    assert shift_to_container(host, R) == container


def test_shift_to_host_and_range_rules():
    assert shift_to_host(1000, R) == 197608
    with pytest.raises(ValueError):
        shift_to_host(65536, R)
    assert 196608 in R and 196608 + 65536 not in R and R.end == 262144
    assert R.overlaps(IdRange(262143, 1)) and not R.overlaps(IdRange(262144, 10))
    with pytest.raises(ValueError):
        IdRange(0, 0)
    assert IdRange.from_json(R.to_json()) == R


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, i) for tag, perm, i in entries)


def test_acl_ids_are_shifted():
    """Named users (tag 2) and groups (tag 8) move; the undefined ID of the other tags stays."""
    undefined = 0xFFFFFFFF
    value = _acl((1, 6, undefined), (2, 4, 197608), (4, 4, undefined), (8, 4, 5), (0x10, 4, undefined))
    assert shift_xattr_to_container("system.posix_acl_access", value, R) == _acl(
        (1, 6, undefined), (2, 4, 1000), (4, 4, undefined), (8, 4, OVERFLOW_ID), (0x10, 4, undefined)
    )
    assert shift_xattr_to_container("system.posix_acl_default", value, R)[16:20] == struct.pack("<I", 1000)


@pytest.mark.parametrize(
    "value, expected",
    [
        # v3 with the range's start as root ID: v2, as the kernel shows it inside the namespace.
        (
            struct.pack("<IIIIII", 0x03000001, 1 << 10, 0, 0, 0, 196608),
            struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0),
        ),
        (struct.pack("<IIIIII", 0x03000000, 1, 0, 0, 0, 197608), struct.pack("<IIIIII", 0x03000000, 1, 0, 0, 0, 1000)),
        (struct.pack("<IIIIII", 0x03000000, 1, 0, 0, 0, 5), struct.pack("<IIIIII", 0x03000000, 1, 0, 0, 0, 5)),
        (struct.pack("<IIIII", 0x02000001, 1, 0, 0, 0), struct.pack("<IIIII", 0x02000001, 1, 0, 0, 0)),
    ],
    ids=["v3-root-becomes-v2", "v3-other-root", "v3-outside-range-kept", "v2-kept"],
)
def test_file_capability_root_id_is_shifted(value, expected):
    assert shift_xattr_to_container("security.capability", value, R) == expected


def test_other_xattrs_are_kept():
    assert shift_xattr_to_container("user.x", b"\x00\x00\x03\x00", R) == b"\x00\x00\x03\x00"


# --- /etc/subuid and /etc/subgid ------------------------------------------------------


@pytest.mark.parametrize(
    "text, entries",
    [
        ("alice:100000:65536\n", [SubIdEntry("alice", 100000, 65536)]),
        ("1000:100000:65536", [SubIdEntry("1000", 100000, 65536)]),
        ("\n# comment\nalice:1:2\n\n", [SubIdEntry("alice", 1, 2)]),
        ("alice:x:2\nbob:1\n:1:2\ncarol:5:0\ndave:4294967295:10\n", []),
        ("a:1:2\na:10:2\n", [SubIdEntry("a", 1, 2), SubIdEntry("a", 10, 2)]),
    ],
    ids=["name", "numeric-owner", "blank-and-comment", "malformed-and-empty", "two-lines-one-owner"],
)
def test_parse_subids(text, entries):
    assert parse_subids(text) == entries


@pytest.mark.parametrize(
    "taken, count, start",
    [
        ([], 65536, 196608),
        ([IdRange(100000, 65536)], 65536, 196608),
        ([IdRange(100000, 65536), IdRange(196608, 10)], 65536, 262144),
        ([IdRange(200000, 10)], 65536, 262144),
        ([IdRange(196608 + 65536, 65536)], 65536, 196608),  # fits in the gap before it
        ([IdRange(196608 + 65536, 65536)], 65537, 327680),  # does not
        ([IdRange(400000, 10), IdRange(196608, 10)], 65536, 262144),  # any order
    ],
    ids=["empty", "hand-written-first-user", "taken-start", "unaligned-end", "gap", "gap-too-small", "unsorted"],
)
def test_free_start(taken, count, start):
    assert free_start(taken, count) == start


def test_free_start_without_room():
    with pytest.raises(StoreError, match="no room"):
        free_start([IdRange(196608, 0xFFFFFFFE - 196608)], 65536)


def test_ensure_reserves_the_same_line_in_both_files(subids):
    pool = ensure_subids(**subids)
    assert pool == [IdRange(196608, 65536 * 1024)]
    assert _read(subids) == ("overlayctl:196608:67108864\n",) * 2
    assert subid_pool(**subids) == pool


def test_ensure_is_idempotent_and_keeps_other_bytes(subids):
    _write(subids, "alice:100000:65536\nbob:196608:65536", "alice:100000:65536\n# gids\n")
    ensure_subids(**subids)
    assert _read(subids) == (
        "alice:100000:65536\nbob:196608:65536\noverlayctl:262144:67108864\n",
        "alice:100000:65536\n# gids\noverlayctl:262144:67108864\n",
    )
    before = _read(subids)
    assert ensure_subids(**subids) == [IdRange(262144, 67108864)]
    assert _read(subids) == before


def test_ensure_makes_missing_files(tmp_path):
    paths = {"subuid": str(tmp_path / "u"), "subgid": str(tmp_path / "g")}
    ensure_subids(**paths)
    assert open(paths["subuid"]).read() == open(paths["subgid"]).read() == "overlayctl:196608:67108864\n"
    assert oct(os.stat(paths["subuid"]).st_mode & 0o777) == "0o644"


def test_the_pool_is_what_both_files_give(subids):
    """uids 1000000-1999999 and gids 1500000-2499999: the pool is their overlap; nothing is written."""
    _write(subids, "overlayctl:1000000:1000000\n", "overlayctl:1500000:1000000\n")
    assert ensure_subids(**subids) == [IdRange(1500000, 500000)]
    assert _read(subids) == ("overlayctl:1000000:1000000\n", "overlayctl:1500000:1000000\n")


def test_an_entry_in_one_file_only_gets_a_fresh_pool(subids):
    """The fresh pool avoids the lone uid line too: 196608 + 64Mi would cover 1000000."""
    _write(subids, "overlayctl:1000000:65536\n", "")
    assert ensure_subids(**subids) == [IdRange(1114112, 67108864)]
    assert _read(subids) == ("overlayctl:1000000:65536\noverlayctl:1114112:67108864\n", "overlayctl:1114112:67108864\n")


def test_remove_restores_the_files_byte_for_byte(subids):
    original = "alice:100000:65536\n\nbob:1:2\n"
    _write(subids, original)
    pool = ensure_subids(**subids)
    assert remove_subids(only=pool[0], **subids)
    assert _read(subids) == (original, original)
    assert not remove_subids(**subids)


def test_a_last_line_without_newline_gets_one(subids):
    _write(subids, "alice:100000:65536")
    ensure_subids(**subids)
    remove_subids(**subids)
    assert _read(subids) == ("alice:100000:65536\n",) * 2


def test_remove_only_one_line(subids):
    _write(subids, "overlayctl:1000000:10\noverlayctl:2000000:10\n")
    assert remove_subids(only=IdRange(2000000, 10), **subids)
    assert _read(subids) == ("overlayctl:1000000:10\n",) * 2


def test_a_stale_shadow_lock_is_broken(subids):
    dead = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    with open(subids["subuid"] + ".lock", "w") as f:
        f.write(str(dead.pid))
    ensure_subids(**subids)
    assert not os.path.exists(subids["subuid"] + ".lock")
    assert not [n for n in os.listdir(os.path.dirname(subids["subuid"])) if n.endswith((".lock", f".{os.getpid()}"))]


def test_a_held_shadow_lock_is_waited_for(subids, monkeypatch):
    monkeypatch.setattr(idranges, "_LOCK_TIMEOUT", 0.3)
    with open(subids["subgid"] + ".lock", "w") as f:
        f.write(str(os.getppid()))  # alive
    with pytest.raises(StoreError, match="is locked by process"):
        ensure_subids(**subids)
    assert _read(subids) == ("", "")
    assert not os.path.exists(subids["subuid"] + ".lock"), "the first lock was not let go"


# --- allocation -------------------------------------------------------------------------


def test_changes_outside_the_lock_are_refused(layout, subids):
    with pytest.raises(AssertionError, match="outside the store lock"):
        allocate(layout, StoreLock(layout.lock), CID[0], **subids)


def test_allocate_hands_out_disjoint_ranges(layout, lock, subids):
    got = [allocate(layout, lock, cid, **subids) for cid in CID[:5]]
    assert got == [IdRange(196608 + i * 65536, 65536) for i in range(5)]
    assert allocate(layout, lock, CID[2], **subids) == got[2], "asking again gives the same range"
    assert held(layout) == dict(zip(CID[:5], got))
    assert range_of(layout, CID[3]) == got[3] and range_of(layout, CID[9]) is None


def test_release_frees_the_range_for_the_next(layout, lock, subids):
    for cid in CID[:3]:
        allocate(layout, lock, cid, **subids)
    assert release(layout, lock, CID[1])
    assert not release(layout, lock, CID[1])
    assert CID[1] not in held(layout)
    assert allocate(layout, lock, CID[7], **subids) == IdRange(196608 + 65536, 65536)


def test_sizes_mix_without_overlap(layout, lock, subids):
    sizes = [65536, 1, 100000, 65536, 7, 131072]
    got = [allocate(layout, lock, cid, size, **subids) for cid, size in zip(CID, sizes)]
    assert [r.size for r in got] == sizes
    assert not any(a.overlaps(b) for i, a in enumerate(got) for b in got[i + 1 :])
    release(layout, lock, CID[2])
    small = allocate(layout, lock, CID[10], 1000, **subids)
    assert small.start == got[2].start, "the lowest free place"


def test_a_full_pool_is_an_error(layout, lock, subids):
    _write(subids, "overlayctl:1000000:131072\n")
    allocate(layout, lock, CID[0], **subids)
    allocate(layout, lock, CID[1], **subids)
    with pytest.raises(StoreError, match="no free range of 65536 IDs"):
        allocate(layout, lock, CID[2], **subids)
    release(layout, lock, CID[0])
    assert allocate(layout, lock, CID[2], **subids) == IdRange(1000000, 65536)


def test_ranges_span_pool_segments(layout, lock, subids):
    _write(subids, "overlayctl:1000000:100000\noverlayctl:5000000:65536\n")
    assert allocate(layout, lock, CID[0], **subids) == IdRange(1000000, 65536)
    assert allocate(layout, lock, CID[1], **subids) == IdRange(5000000, 65536), "the rest of the first is too small"


def test_a_damaged_record_is_a_store_error(layout):
    with open(layout.idranges_json, "w") as f:
        f.write('{"ranges": {"x": {"start": -1, "size": 5}}}')
    with pytest.raises(StoreError, match="damaged record"):
        held(layout)


def _allocate_many(root, run_root, ids, subids, start, results):
    layout = StoreLayout(root, run_root)
    start.wait()
    got = []
    for cid in ids:
        with StoreLock(layout.lock, timeout=60) as lock:
            got.append((cid, allocate(layout, lock, cid, **subids).start))
    results.put(got)


def test_concurrent_processes_get_distinct_ranges(layout, subids):
    groups = [CID[i * 5 : i * 5 + 5] for i in range(4)]
    got = race(_allocate_many, [(layout.root, layout.run_root, ids, subids) for ids in groups])
    assert sorted(got.values()) == [196608 + i * 65536 for i in range(20)], "a range was handed out twice"
    assert {c: r.start for c, r in held(layout).items()} == got
    assert _read(subids) == ("overlayctl:196608:67108864\n",) * 2, "the pool was reserved once"
