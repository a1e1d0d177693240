"""Containers on disk: init layer, upper, work, merged; and their mount plans."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from ..errors import AlreadyExists, InvalidArgument, NotFound
from ..plan.mountplan import MountPlan
from ..plan.options import check_layer_count, merge_options
from .atomic import discard, new_staging, publish, symlink_atomic, write_atomic
from .ids import short_id, short_link
from .layers import layer_link
from .layout import StoreLayout
from .records import ContainerRecord, ImageRecord, damaged, dump_json, load_each, load_json, now_rfc3339

if TYPE_CHECKING:
    from .transaction import Transaction

HOSTS_TEMPLATE = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
{address}\t{hostname}
"""


#: Where a running container mounts its own filesystems.
MOUNT_POINTS = ("dev", "proc", "sys")


def container_ids(layout: StoreLayout) -> list[str]:
    try:
        return os.listdir(layout.containers)
    except FileNotFoundError:
        return []


def load_container(layout: StoreLayout, container_id: str) -> ContainerRecord:
    path = layout.container_json(container_id)
    try:
        return ContainerRecord.from_json(load_json(path))
    except FileNotFoundError:
        raise NotFound(f"no such container: {container_id}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(path, f"missing or bad field {exc}") from None


def list_containers(layout: StoreLayout) -> list[ContainerRecord]:
    """Every container, oldest first; one removed meanwhile is left out, a damaged one skipped with a warning."""
    records = load_each(container_ids(layout), lambda container_id: load_container(layout, container_id))
    return sorted(records, key=lambda r: (r.created, r.id))


def resolve_container(layout: StoreLayout, ref: str) -> ContainerRecord:
    """A container by name, full ID or unique ID prefix (one record read)."""
    try:
        return load_container(layout, os.path.basename(os.readlink(layout.name_link(ref))))
    except (OSError, ValueError, NotFound):
        pass
    matches = [i for i in container_ids(layout) if ref and i.startswith(ref.lower())]
    if len(matches) == 1:
        return load_container(layout, matches[0])
    if len(matches) > 1:
        raise InvalidArgument(f"container ID prefix {ref!r} is ambiguous", hint="give more characters")
    raise NotFound(f"no such container: {ref}", hint="see 'overlayctl container ls'")


def create_container(
    txn: Transaction,
    image: ImageRecord,
    *,
    name: str | None,
    options: tuple = (),
    hostname: str | None = None,
    spec: dict | None = None,
    container_id: str | None = None,
    address: str | None = None,
) -> ContainerRecord:
    """Make a container's directories and record, and publish them.

    ``address``, its bridge address if it has one, goes into the init
    layer's /etc/hosts.  The directories are small, so they are built
    inside the transaction.
    """
    layout = txn.layout
    check_layer_count(len(image.diff_ids) + 1)
    container_id = container_id or new_container_id()
    name = name or f"c-{container_id[:10]}"
    record = ContainerRecord(
        id=container_id,
        name=name,
        image=image.id,
        created=now_rfc3339(),
        hostname=hostname or container_id[:12],
        link=short_link(f"{container_id}/init"),
        layers=tuple(image.layers),
        options=tuple(options),
        spec=dict(spec or {}),
        address=address,
    )
    staged = new_staging(layout.staging)
    try:
        for sub in ("init", "upper", "work", "merged"):
            os.mkdir(f"{staged}/{sub}", 0o755)
        write_init_layer(f"{staged}/init", record.hostname, record.address)
        write_atomic(f"{staged}/container.json", dump_json(record.to_json()))
        claim_name(txn, name, container_id)
        os.makedirs(layout.links, exist_ok=True)
        os.makedirs(layout.containers, exist_ok=True)
        txn.creating(layout.link(record.link), layout.container_dir(container_id))
        symlink_atomic(f"../containers/{container_id}/init", layout.link(record.link))
        publish(staged, layout.container_dir(container_id))
    finally:
        discard(staged)
    return record


def new_container_id() -> str:
    return os.urandom(32).hex()


def claim_name(txn: Transaction, name: str, container_id: str) -> None:
    """Take a container name; a name held by a live container is AlreadyExists."""
    layout = txn.layout
    path = layout.name_link(name)
    if os.path.exists(path):
        raise AlreadyExists(f"container name {name!r} is already taken")
    # A dangling name left by an interrupted create or remove: reuse it.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.makedirs(layout.names, exist_ok=True)
    txn.creating(path)
    os.symlink(f"../containers/{container_id}", path)


def write_init_layer(init: str, hostname: str, address: str | None = None) -> None:
    """The files every container gets between its image and its upper.

    Like Docker's "-init" layer: they shadow the image's copies, so the
    image's own /etc stays as it was.  The mount points of a running
    container (/dev, /proc, /sys) are made here too, so they never land in
    the upper, its diff or its commits.
    """
    os.mkdir(f"{init}/etc", 0o755)
    for mount_point in MOUNT_POINTS:
        os.mkdir(f"{init}/{mount_point}", 0o755)
    files = {
        "hostname": f"{hostname}\n",
        "hosts": HOSTS_TEMPLATE.format(hostname=hostname, address=address.split("/")[0] if address else "127.0.1.1"),
        "resolv.conf": _host_resolv_conf(),
    }
    for name, text in files.items():
        with open(f"{init}/etc/{name}", "w") as f:
            f.write(text)
        os.chmod(f"{init}/etc/{name}", 0o644)


def _host_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return ""


def build_plan(layout: StoreLayout, record: ContainerRecord, *, links: bool = False, labels: bool = True) -> MountPlan:
    """The overlay for a container: init layer over the image layers (top first).

    Everything comes from the container's own record (its image's layers are
    copied there at create time), so planning reads one file.  ``links``
    adds the short relative names that classic mount(2) needs; ``labels``
    names each lower for people (the mount itself does without).
    """
    layers = record.layers[::-1]
    return MountPlan(
        lowers=(layout.init(record.id), *layout.diffs(layers)),
        upper=layout.upper(record.id),
        work=layout.work(record.id),
        target=layout.merged(record.id),
        options=merge_options(record.options),
        links=(f"l/{record.link}", *(f"l/{layer_link(layer)}" for layer in layers)) if links else None,
        link_base=layout.root if links else None,
        labels=("init", *[f"layer {short_id(layer)}" for layer in layers]) if labels else (),
    )


def reset_work(txn: Transaction, record: ContainerRecord) -> None:
    """Remove what a volatile mount leaves in work/ (it poisons the next mount)."""
    incompat = f"{txn.layout.work(record.id)}/work/incompat"
    if os.path.isdir(incompat):
        txn.trash(incompat)


def removal_paths(layout: StoreLayout, record: ContainerRecord) -> list[str]:
    """What removing a container removes: its directory, its init layer's link, its name."""
    return [layout.container_dir(record.id), layout.link(record.link), layout.name_link(record.name)]


def describe_path(layout: StoreLayout, path: str, base: str | None = None) -> dict[str, str] | None:
    """What a directory seen in a mount is in this store, or None if foreign.

    Relative paths (classic mounts with short links) resolve against base,
    by default the store root.
    """
    if not os.path.isabs(path):
        path = os.path.join(base or layout.root, path)
    if path.startswith(layout.links + "/"):
        try:
            target = os.readlink(path)
        except OSError:
            return {"kind": "link", "id": os.path.basename(path), "detail": "dangling short link"}
        return describe_path(layout, os.path.normpath(os.path.join(layout.links, target)))
    parts = os.path.relpath(path, layout.root).split(os.sep)
    if parts[0] == "layers" and len(parts) == 3 and parts[2] == "diff":
        return {"kind": "layer", "id": "sha256:" + parts[1]}
    if parts[0] == "containers" and len(parts) == 3 and parts[2] in ("init", "upper", "work", "merged"):
        info = {"kind": parts[2], "container": parts[1]}
        with contextlib.suppress(Exception):
            info["name"] = load_container(layout, parts[1]).name
        return info
    return None
