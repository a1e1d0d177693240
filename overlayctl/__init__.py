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

from typing import TYPE_CHECKING

__all__ = [
    "LayerStore",
    "MountPlan",
    "OverlayctlError",
]

if TYPE_CHECKING:
    from .api import LayerStore
    from .errors import OverlayctlError
    from .plan.mountplan import MountPlan


def __getattr__(name: str):
    # Lazy, so that "import overlayctl.cli" stays light.
    if name == "LayerStore":
        from .api import LayerStore

        return LayerStore
    if name == "MountPlan":
        from .plan.mountplan import MountPlan

        return MountPlan
    if name == "OverlayctlError":
        from .errors import OverlayctlError

        return OverlayctlError
    raise AttributeError(name)
