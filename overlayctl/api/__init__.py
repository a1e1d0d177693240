"""LayerStore: the Python API that the CLI and the benchmarks call.

It joins the store (disk), the plan (pure data) and the kernel (syscalls)::

    from overlayctl import LayerStore

    store = LayerStore(root="/var/lib/overlayctl")
    image = store.import_image("/srv/rootfs", tag="base")    # a one-layer image
    ctr = store.create_container("base", name="web")         # init layer + empty upper
    store.mount("web")                # overlay in a new, pinned mount namespace
    print(store.plan("web").lowers)   # what is mounted, top first
    store.commit("web", tag="base:v2", message="add config")
    store.unmount("web")
    store.remove_container("web")

Every mutation is built in staging and published by rename under the store
lock, so a failed or interrupted call leaves the store as it was.
"""

from __future__ import annotations

from ._base import ContainerState, StoreBase
from ._containers import ContainersAPI
from ._images import ImagesAPI
from ._inspect import InspectAPI, union_workdir
from ._running import RunningAPI

__all__ = ["ContainerState", "LayerStore", "StoreBase", "union_workdir"]


class LayerStore(ImagesAPI, ContainersAPI, RunningAPI, InspectAPI):
    """A layer store at ``root`` with runtime state under ``run_root``.

    Layers are read-only and content addressed (chain IDs); images are
    ordered stacks of layers; containers are an image plus an init layer
    and a writable upper.  References accept tags, names and unique ID
    prefixes everywhere.

    Each group of verbs lives in its own module: ``_images`` (layers and
    images), ``_containers``, ``_running`` and ``_inspect``.
    """
