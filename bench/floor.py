"""Family ``floor``: the raw kernel mount of the layer dirs overlayctl mounts, and its own kernel part.

For each N: the N layer directories of the store's image (plus an init
directory, as a container has), an upper and a work dir, mounted by the
raw system calls with no overlayctl code in between: the new API with the
layers' absolute paths, and classic mount(2) with the store's short
relative links.  The floor is the API overlayctl uses on this kernel (the
new one where the kernel has ``lowerdir+``), mount(2) is printed beside
it.  Only the mount call is timed; each sample is unmounted afterwards.
Then ``kernel.mount.apply`` of the api-N containers' plans, both APIs:
overlayctl's cost split into the kernel's part and its own.

It runs in a forked child in a private mount namespace of its own, so its
mounts never reach the host and die with it.  The rest of the bench stays
in the caller's namespace: on Linux 6.18 mount namespace IDs come from
per-CPU batches, so a namespace made later can have a smaller ID than the
caller's, and the kernel then refuses overlayctl's namespace pin (EINVAL).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .context import Bench, image_for, reps_for
from .harness import reps_or, sample
from .rawmount import raw_new_api_mount
from .results import Results, header, not_measured

if TYPE_CHECKING:
    from overlayctl import LayerStore

NAME = "floor"
SUMMARY = "raw kernel mount of the same N layer dirs (private namespace), and kernel.mount.apply of a plan"

FLOOR_NS = (1, 10, 100, 125, 500)
PLAN_NS = (1, 10, 100, 500)
FLOOR_REPS = 100


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    """Run the floor in a child in a private mount namespace; its rows and medians come back by a pipe."""
    store = ctx.deep_store()
    for n in PLAN_NS:
        ctx.container("api", n)
    sys.stdout.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(read_fd)
            enter_private_namespace()
            child = Results()
            _floor(child, ctx.base, store, reps)
            _plan_apply(child, store, reps)
            os.write(write_fd, json.dumps({"rows": child.rows, "floor": child.floor}).encode())
            status = 0
        except KeyboardInterrupt:
            status = 130
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
    finally:
        _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 130:
        raise KeyboardInterrupt
    if code != 0 or not data:
        raise RuntimeError(f"the floor benchmark failed (exit {code})")
    found = json.loads(data)
    results.rows.extend(found["rows"])
    results.floor.update({int(n): t for n, t in found["floor"].items()})


def enter_private_namespace() -> None:
    """Move this process into a private mount namespace (the floor's child)."""
    from overlayctl.kernel import _libc

    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)


def _floor(results: Results, base: Path, store: LayerStore, reps: int | None) -> None:
    """Raw overlay mounts of the same lower directories overlayctl mounts, both APIs."""
    from overlayctl.kernel import _libc
    from overlayctl.kernel.mount import MountApi, default_api
    from overlayctl.plan.options import DEFAULT_OPTIONS
    from overlayctl.store.layers import layer_link

    work = base / "floor"
    for sub in ("init", "u", "w", "m"):
        (work / sub).mkdir(parents=True)
    # The same feature options overlayctl passes: compare like with like.
    options = [(k, v) for k, v in DEFAULT_OPTIONS]
    option_text = ",".join(k if v is None else f"{k}={v}" for k, v in options)
    target = str(work / "m")

    def layers_of(n: int) -> list[str]:
        return store.images.get(image_for(n)[0]).layers[::-1]

    def classic(n: int) -> Callable[[], None]:
        links = [os.path.relpath(work / "init", store.layout.root)]
        links += [f"l/{layer_link(layer)}" for layer in layers_of(n)]
        data = f"lowerdir={':'.join(links)},upperdir={work}/u,workdir={work}/w,{option_text}"
        if len(data) > 4095:
            # mount(2) would silently cut the string at one page.
            raise OSError(0, f"options take {len(data)} bytes, mount(2) takes one page (4095)")
        return lambda: _libc.mount("overlay", target, "overlay", 0, data)

    def new_api(n: int) -> Callable[[], None]:
        paths = [str(work / "init")] + store.layout.diffs(layers_of(n))
        return lambda: raw_new_api_mount(paths, f"{work}/u", f"{work}/w", target, options)

    def unmount() -> None:
        _libc.umount2(target, 0)

    header("floor: raw kernel mount of the same N layer dirs + init + upper + work (mount call only)")
    cwd = os.getcwd()
    os.chdir(store.layout.root)  # the short links are relative to the store root
    try:
        for n in FLOOR_NS:
            lowers = image_for(n)[1] + 1
            # Cheap and noisy: many samples, back to back (a pause between
            # samples makes every mount slower on this VM, not steadier).
            count = reps_or(FLOOR_REPS, reps)
            t_new = sample(new_api(n), count, warmup=5, after=unmount)
            r_new = results.add("floor", "fsopen/lowerdir+/fsmount/move_mount", t_new, n=n, lowers=lowers)
            try:
                t_classic = sample(classic(n), count, warmup=5, after=unmount)
                r_classic = results.add("floor", "mount(2), short relative links", t_classic, n=n, lowers=lowers)
            except OSError as exc:
                r_classic = None
                not_measured("mount(2), short relative links", n, f"not possible: {exc.strerror}")
            # The floor is the kernel interface overlayctl itself uses.
            floor = r_new if default_api() is MountApi.NEW or r_classic is None else r_classic
            results.floor[n] = floor["median_s"]
    finally:
        with contextlib.suppress(OSError):
            _libc.umount2(target, _libc.MNT_DETACH)
        os.chdir(cwd)


def _plan_apply(results: Results, store: LayerStore, reps: int | None) -> None:
    """kernel.mount.apply of the api-N containers' plans: the store's paths, no namespace, no store work."""
    from overlayctl.errors import TooManyLayers
    from overlayctl.kernel import mount as kmount

    header("kernel part of overlayctl: kernel.mount.apply(plan) of a container, both APIs")
    for n in PLAN_NS:
        plan = store.containers.plan(f"api-{n}", links=True)
        apis = (
            (kmount.MountApi.NEW, "apply(plan), new API"),
            (kmount.MountApi.CLASSIC, "apply(plan), classic + short links"),
        )
        for api, label in apis:
            count = reps_or(reps_for(n), reps)
            try:
                times = sample(lambda: kmount.apply(plan, api), count, after=lambda: kmount.unmount(plan.target))
            except TooManyLayers as exc:
                not_measured(label, n, f"not possible: {exc.message}")
                continue
            results.add("kernel", label, times, n=n, lowers=len(plan.lowers), floor_n=n)
