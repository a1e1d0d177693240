"""overlayctl: a layer store and overlayfs mount orchestrator for Linux.

Glossary (one word per idea):

layer
    A read-only, content-addressed set of files; its ID is the OCI chain ID.
diff
    A layer's directory of files, in overlay form (whiteouts are 0/0 char
    devices, opaque directories carry ``trusted.overlay.opaque=y``).
image
    An ordered stack of layers (bottom to top) with a runtime config; its ID
    is the sha256 of its record.
container
    An image plus an *init layer* (hostname, hosts, resolv.conf) and a
    writable *upper*, with the overlay's *work* dir and *merged* mount point.
plan
    A MountPlan: what to mount with which options, as plain data.
pin
    A bind mount of a mount namespace onto a file, keeping it alive.
"""

from __future__ import annotations

import importlib

# Public name -> the module that defines it.  Loaded lazily, so that
# "import overlayctl.cli" stays light.
_EXPORTS = {
    "LayerStore": "api",
    "Layers": "api",
    "Images": "api",
    "Containers": "api",
    "Runtime": "api",
    "Mounts": "api",
    "System": "api",
    "Registries": "api",
    "PullReport": "api",
    "PulledLayer": "api",
    "PushReport": "api",
    "PushedBlob": "api",
    "ContainerState": "api",
    "HistoryEntry": "api",
    "ImageRemoval": "api",
    "CheckReport": "api",
    "DiskUsage": "api",
    "ImageUsage": "api",
    "PruneReport": "api",
    "OverlayMount": "api",
    "MountedDir": "api",
    "NetworkInfo": "api",
    "LayerRecord": "store.records",
    "ImageRecord": "store.records",
    "ContainerRecord": "store.records",
    "RunState": "store.state",
    "Change": "store.changes",
    "Problem": "store.check",
    "MountPlan": "plan.mountplan",
    "OverlayctlError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
