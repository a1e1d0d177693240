"""ID ranges and ID maps of user-namespaced containers: values only, no system calls.

A container run with ``--userns=auto`` holds an ``IdRange`` of host IDs,
the same numbers for users and groups.  Its ID map puts container ID 0 on
the range's start::

    container 0 .. size-1   <->   host start .. start+size-1

The same map serves the user namespace (``/proc/PID/uid_map``, the OCI
``linux.uidMappings``) and the idmapped mounts of its layers: a file owned
by 0 in a layer shows as owned by ``start`` through the idmapped mount, so
the container sees it owned by its root.  Files the container creates in its
upper (which is not idmapped) are owned by host IDs in the range; commit
shifts them back with ``shift_to_container``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The ID the kernel shows for an ID the user namespace does not map
#: (/proc/sys/kernel/overflowuid and overflowgid default to it).
OVERFLOW_ID = 65534
#: IDs are 32 bits and (uid_t)-1 means "no change" to the kernel: never map it.
MAX_ID = 0xFFFFFFFE
#: What a container gets by default: all 16-bit IDs, as a container image expects.
DEFAULT_RANGE_SIZE = 65536

#: An ID map: (container_id, host_id, size) triples, the lines of /proc/PID/uid_map.
IdMap = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class IdRange:
    """Host IDs ``start`` to ``start + size - 1``.  Raises ValueError for an empty or out-of-range one."""

    start: int
    size: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.size < 1 or self.start + self.size - 1 > MAX_ID:
            raise ValueError(f"not an ID range: start {self.start}, size {self.size}")

    @property
    def end(self) -> int:
        """The first ID after the range."""
        return self.start + self.size

    def __contains__(self, host_id: object) -> bool:
        return isinstance(host_id, int) and self.start <= host_id < self.start + self.size

    def overlaps(self, other: IdRange) -> bool:
        return self.start < other.end and other.start < self.end

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "size": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdRange:
        return cls(int(data["start"]), int(data["size"]))


def mapping_for(id_range: IdRange) -> IdMap:
    """The ID map that puts container ID 0 on the range's start: ``((0, start, size),)``."""
    return ((0, id_range.start, id_range.size),)


def format_map(id_map: IdMap) -> str:
    """The text to write to /proc/PID/uid_map or gid_map (one write, one line per triple)."""
    check_map(id_map)
    return "".join(f"{inside} {outside} {size}\n" for inside, outside, size in id_map)


def oci_mappings(id_map: IdMap) -> list[dict[str, int]]:
    """The map as OCI ``linux.uidMappings`` / ``gidMappings`` entries."""
    check_map(id_map)
    return [{"containerID": inside, "hostID": outside, "size": size} for inside, outside, size in id_map]


def check_map(id_map: IdMap) -> None:
    """Raise ValueError unless id_map is one the kernel accepts: 1 to 340 lines, no overlaps on either side.

    user_namespaces(7): at most 340 lines (since Linux 4.15), and neither the
    container ranges nor the host ranges may overlap each other.
    """
    if not 1 <= len(id_map) <= 340:
        raise ValueError(f"an ID map has 1 to 340 lines, not {len(id_map)}")
    for side in (0, 1):
        spans = sorted((triple[side], triple[side] + triple[2]) for triple in id_map)
        for (start, end), (next_start, _) in zip(spans, spans[1:]):
            if next_start < end:
                raise ValueError(f"overlapping ID map lines: {id_map}")
    for inside, outside, size in id_map:
        if min(inside, outside) < 0 or size < 1 or max(inside, outside) + size - 1 > MAX_ID:
            raise ValueError(f"bad ID map line: {inside} {outside} {size}")


def shift_to_container(host_id: int, id_range: IdRange) -> int:
    """The ID the container sees for host_id: ``host_id - start`` inside the range, else OVERFLOW_ID.

    Outside the range the kernel shows the container OVERFLOW_ID (nobody), so
    a committed layer holds what the container saw: a file host root left in
    the upper does not become root's in the image.
    """
    if id_range.start <= host_id < id_range.start + id_range.size:
        return host_id - id_range.start
    return OVERFLOW_ID


def shift_to_host(container_id: int, id_range: IdRange) -> int:
    """The host ID of a container ID.  Raises ValueError for an ID the range does not map."""
    if not 0 <= container_id < id_range.size:
        raise ValueError(f"container ID {container_id} is not mapped by {id_range}")
    return id_range.start + container_id


# --- IDs inside xattr values ---------------------------------------------------
# A container in a user namespace that sets a file capability or an ACL has
# the kernel store host IDs in the value, as it does for owners; commit shifts
# them back like owners.  Layouts: include/uapi/linux/capability.h (struct
# vfs_ns_cap_data) and include/uapi/linux/posix_acl_xattr.h.
CAPABILITY_XATTR = "security.capability"
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_VFS_CAP_REVISION_MASK = 0xFF000000
_VFS_CAP_REVISION_2 = 0x02000000
_VFS_CAP_REVISION_3 = 0x03000000
_VFS_CAP_V2_SIZE = 20
_VFS_CAP_V3_SIZE = 24
_ACL_USER, _ACL_GROUP = 0x02, 0x08


def shift_xattr_to_container(name: str, value: bytes, id_range: IdRange) -> bytes:
    """An xattr value with the host IDs it holds shifted as ``shift_to_container`` does.

    ACL entries of named users and groups are shifted (outside the range:
    OVERFLOW_ID, as the kernel shows them in the namespace).  A version 3
    file capability whose root ID is in the range gets the shifted one, and
    becomes version 2 when that is 0, as the kernel shows it to the
    namespace (a v3 capability with root ID 0 means the same).  Other xattrs,
    and values too short to be what their name says, come back unchanged.
    """
    if name == CAPABILITY_XATTR:
        return _shift_capability(value, id_range)
    if name in ACL_XATTRS:
        return _shift_acl(value, id_range)
    return value


def _shift_capability(value: bytes, id_range: IdRange) -> bytes:
    if len(value) != _VFS_CAP_V3_SIZE:
        return value
    magic = int.from_bytes(value[:4], "little")
    rootid = int.from_bytes(value[20:24], "little")
    if magic & _VFS_CAP_REVISION_MASK != _VFS_CAP_REVISION_3 or rootid not in id_range:
        return value
    rootid -= id_range.start
    if rootid == 0:
        magic = (magic & ~_VFS_CAP_REVISION_MASK) | _VFS_CAP_REVISION_2
        return magic.to_bytes(4, "little") + value[4:_VFS_CAP_V2_SIZE]
    return value[:20] + rootid.to_bytes(4, "little")


def _shift_acl(value: bytes, id_range: IdRange) -> bytes:
    if len(value) < 4 or (len(value) - 4) % 8:
        return value
    out = bytearray(value)
    for pos in range(4, len(value), 8):
        tag = int.from_bytes(value[pos : pos + 2], "little")
        if tag in (_ACL_USER, _ACL_GROUP):
            host_id = int.from_bytes(value[pos + 4 : pos + 8], "little")
            out[pos + 4 : pos + 8] = shift_to_container(host_id, id_range).to_bytes(4, "little")
    return bytes(out)
