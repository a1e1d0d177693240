"""What the families share: a temp dir, the deep store, the busybox rootfs, the CLI, cleanup.

Everything is made on first use, so a family builds only what it needs:
``help`` no store at all, ``busybox`` and ``run`` a store without the deep
images.  The deep store holds one chain of 499 layers with an image at
each depth the families mount (``deep:N``); N = 500 uses the image of 499
layers, because a container adds its init layer and 500 lowers is the
kernel's limit.  Containers are created on demand, one per name.

overlayctl runs in the caller's mount namespace, as a user runs it: its
mounts live in the containers' own namespaces, pinned under the temp run
root.  ``cleanup`` removes every container, unmounts whatever is left
under the temp dir and deletes it, also after an error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from testkit.dockerd import mounts_under
from testkit.rootfs import build_busybox_rootfs

if TYPE_CHECKING:  # overlayctl is imported when first used: --help needs none of it
    from overlayctl import LayerStore

CLI = os.environ.get("OVERLAYCTL") or str(Path(sys.executable).parent / "overlayctl")
STORE_NS = (1, 10, 100, 125, 500)  # the N values the deep store has an image for
MAX_IMAGE_LAYERS = 499  # plus the container's init layer: 500 lowers


def image_for(n: int) -> tuple[str, int]:
    """The tag and image depth for N: N layers, but 499 at N = 500."""
    depth = min(n, MAX_IMAGE_LAYERS)
    return f"deep:{depth}", depth


def reps_for(n: int) -> int:
    """Repetitions of an N-layer mount: many for fast mounts, fewer for the 500-layer ones."""
    return 50 if n <= 10 else 30 if n <= 125 else 20


class Bench:
    """The run's temp dir and what is built in it, each thing on first use."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="overlayctl-bench."))
        self._store: LayerStore | None = None
        self._deep = False
        self._rootfs: tuple[Path, int] | None = None

    def store(self) -> LayerStore:
        """The bench's store in the temp dir, empty when first made."""
        if self._store is None:
            from overlayctl import LayerStore

            self._store = LayerStore(root=str(self.base / "store"), run_root=str(self.base / "run"))
        return self._store

    def deep_store(self) -> LayerStore:
        """The store with its deep images: a chain of 499 layers, an image at each depth of STORE_NS."""
        store = self.store()
        if self._deep:
            return store
        depths = sorted({image_for(n)[1] for n in STORE_NS})
        src = self.base / "layer-src"
        src.mkdir()
        start = time.perf_counter()
        parent = None
        for depth in range(1, max(depths) + 1):
            for old in src.iterdir():
                old.unlink()
            (src / f"file{depth}").write_text(f"layer {depth}\n")
            parent = store.layers.create(str(src), parent=parent).id
            if depth in depths:
                store.images.create(parent, tag=f"deep:{depth}")
        self._deep = True
        print(f"(store: a chain of {max(depths)} layers built in {time.perf_counter() - start:.1f} s)", flush=True)
        return store

    def container(self, prefix: str, n: int) -> str:
        """The name of container PREFIX-N of image deep:N, created on first use."""
        name = f"{prefix}-{n}"
        store = self.deep_store()
        if not any(state.record.name == name for state in store.containers.list()):
            store.containers.create(image_for(n)[0], name=name)
        return name

    def busybox_rootfs(self) -> tuple[Path, int]:
        """The tests' busybox rootfs (the host's busybox with its applet links) and its applet count."""
        if self._rootfs is None:
            path = self.base / "busybox-rootfs"
            applets = build_busybox_rootfs(path)
            if applets is None:
                raise RuntimeError("no busybox on this host; install busybox-static (make deps)")
            self._rootfs = path, applets
        return self._rootfs

    def cli(self, *args: str) -> None:
        """overlayctl ARGS on this store, as a subprocess; raises if it fails."""
        store = self.store()
        subprocess.run(
            [CLI, "--root", store.layout.root, "--run-root", store.layout.run_root, *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def cleanup(self) -> None:
        """Remove every container, unmount everything under the temp dir, delete it."""
        store = self._store
        if store is not None:
            from overlayctl.kernel import ns

            with contextlib.suppress(Exception):
                for state in store.containers.list():
                    with contextlib.suppress(Exception):
                        store.containers.remove(state.record.id, force=True)
            with contextlib.suppress(Exception):
                ns.release_pin_dir(store.layout.ns_dir)
        points = mounts_under(self.base)
        if points:
            from overlayctl.kernel import _libc

            for point in sorted(points, reverse=True):
                with contextlib.suppress(OSError):
                    _libc.umount2(point, _libc.MNT_DETACH)
        left = mounts_under(self.base)
        if left:
            print(f"bench: could not unmount {left}; leaving {self.base}", file=sys.stderr)
            return
        shutil.rmtree(self.base, ignore_errors=True)
