"""``--userns=auto``: a user namespace of the container's own, its layers idmapped.

The container gets a range of host IDs of its own (``store/idranges.py``).
Its image layers and init layer are shown to it through idmapped mounts, so
nothing is copied or chowned; its upper is plain, so what it writes lands
on the host owned by its mapped IDs (and ``container commit`` maps them
back).  Root in the container is an unprivileged ID on the host.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace

from ..errors import InvalidArgument
from ..plan.idmap import IdRange, mapping_for
from ..plan.mountplan import MountPlan
from ..store.layout import StoreLayout
from ..store.lock import StoreLock
from ..store.records import ContainerRecord


def prepare(layout: StoreLayout, lock: StoreLock, record: ContainerRecord) -> IdRange:
    """The container's ID range (allocated once), and a root it can reach.

    The runtime bind-mounts the root from inside the user namespace, so
    every directory above it must be searchable by others: the store's own
    directories get o+x (nothing becomes listable), the ones above the
    store must have it already.
    """
    from ..store.idranges import allocate

    _check_searchable(os.path.dirname(layout.root))
    for directory in (layout.root, layout.containers, layout.container_dir(record.id)):
        mode = os.stat(directory).st_mode
        os.chmod(directory, mode | 0o011)
    id_range = allocate(layout, lock, record.id)
    os.lchown(layout.upper(record.id), id_range.start, id_range.start)  # the merged root's owner
    return id_range


def _check_searchable(path: str) -> None:
    while True:
        if not os.stat(path).st_mode & 0o001:
            raise InvalidArgument(
                f"--userns=auto needs every directory above the store searchable by others; {path} is not",
                hint=f"chmod o+x {path}, or keep the store under /var/lib",
            )
        if path == "/":
            return
        path = os.path.dirname(path)


def mount_idmapped(plan: MountPlan, id_range: IdRange) -> None:
    """Mount the overlay with every lower idmapped into the range (in the caller's mount namespace)."""
    from ..kernel import mount as kmount
    from ..kernel.idmap import idmapped_clone, open_userns

    mapping = mapping_for(id_range)
    userns = open_userns(mapping, mapping)
    clones: list[int] = []
    try:
        for lower in plan.lowers:
            clones.append(idmapped_clone(lower, userns))
        lowers = tuple(f"/proc/self/fd/{fd}" for fd in clones)
        kmount.apply(replace(plan, lowers=lowers, links=None, link_base=None, labels=()))
    finally:
        for fd in (userns, *clones):
            with contextlib.suppress(OSError):
                os.close(fd)
