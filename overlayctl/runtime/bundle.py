"""A container's OCI bundle: the host facts its config needs, and config.json on disk."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from ..errors import NotFound
from ..plan.idmap import IdRange, mapping_for
from ..store.atomic import write_atomic
from ..store.layout import StoreLayout
from ..store.records import ContainerRecord
from . import seccomp
from .ocispec import HostFacts, ProcessUser, build_config
from .spec import RunSpec

#: Static init binaries for --init, in order of preference (they run in any image).
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/catatonit", "/usr/libexec/catatonit/catatonit")
CGROUP_PARENT = "overlayctl"


def device_entry(host: str, path: str, access: str = "rwm") -> dict[str, Any]:
    """A linux.devices entry for a host device node."""
    try:
        st = os.stat(host)
    except FileNotFoundError:
        raise NotFound(f"device {host} does not exist") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise NotFound(f"{host} is not a device node")
    return {
        "path": path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "access": access,
    }


def host_devices() -> list[dict[str, Any]]:
    """Every device node at the top of the host's /dev (what --privileged gives)."""
    found = []
    for name in sorted(os.listdir("/dev")):
        path = f"/dev/{name}"
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and name not in ("console", "ptmx", "tty"):
            found.append(device_entry(path, path))
    return found


def host_capabilities() -> set[str]:
    """The capabilities of overlayctl's bounding set: all --privileged can give."""
    from .profile import ALL_CAPS

    with open("/proc/self/status") as f:
        bits = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return {f"CAP_{name}" for bit, name in enumerate(ALL_CAPS) if bits >> bit & 1}


def init_binary() -> str:
    for path in INIT_BINARIES:
        if os.access(path, os.X_OK):
            return path
    raise NotFound("--init needs tini or catatonit on the host", hint="apt install tini")


def host_facts(
    layout: StoreLayout, record: ContainerRecord, spec: RunSpec, *, id_range: IdRange | None = None
) -> HostFacts:
    """Everything of the host that goes into the config, looked up before the container starts."""
    spec.check_sources()
    devices = [device_entry(d.host, d.path, d.access) for d in spec.devices]
    if spec.privileged:
        devices = host_devices() + devices
    return HostFacts(
        rootfs=layout.merged(record.id),
        hostname=record.hostname,
        cgroups_path=f"/{CGROUP_PARENT}/{record.id}",
        own_network=spec.network != "host",
        capabilities=tuple(c for c in spec.capabilities() if not spec.privileged or c in host_capabilities()),
        seccomp=seccomp.resolve(spec.seccomp, capabilities=spec.capabilities(), privileged=spec.privileged),
        init_binary=init_binary() if spec.init else None,
        devices=tuple(devices),
        id_mappings=mapping_for(id_range) if id_range else (),
    )


def write_config(
    layout: StoreLayout, record: ContainerRecord, spec: RunSpec, user: ProcessUser, facts: HostFacts
) -> str:
    """Write the bundle's config.json; its directory."""
    bundle = layout.bundle(record.id)
    os.makedirs(bundle, exist_ok=True)
    write_atomic(f"{bundle}/config.json", json.dumps(build_config(spec, user, facts), indent=2).encode())
    return bundle


def read_config(layout: StoreLayout, container_id: str) -> dict[str, Any]:
    with open(f"{layout.bundle(container_id)}/config.json") as f:
        return json.load(f)


def planned_config(layout: StoreLayout, record: ContainerRecord) -> dict[str, Any]:
    """The config a container that never ran would start with.

    Its user is looked up in the topmost of its layers that has an
    /etc/passwd, without mounting anything.
    """
    from ..store import containers as ctrs
    from ..store.idranges import range_of
    from .users import resolve_user

    spec = RunSpec.from_json(record.spec or {})
    plan = ctrs.build_plan(layout, record, labels=False)
    layers = [plan.upper, *plan.lowers]
    root = next((d for d in layers if os.path.isfile(f"{d}/etc/passwd")), plan.target)
    facts = host_facts(layout, record, spec, id_range=range_of(layout, record.id))
    return build_config(spec, resolve_user(root, spec.user), facts)
