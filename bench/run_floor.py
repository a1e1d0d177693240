"""The floor of ``overlayctl run``'s runtime step: ``runc run`` of a bundle prepared once; the CLI calls it needs.

Container ``benchfloor`` runs once (``overlayctl run --name benchfloor``),
so its bundle's config.json exists with the default profile; ``container
spec`` prints it.  Its overlay is mounted with ``container mount --host``:
runc runs in the caller's mount namespace and does not see a pinned
namespace's mount.  Each ``runc run`` has a fresh ID under a state dir of
the bench's own; runc deletes a foreground container at its exit, and
``runc list`` is asked afterwards whether it did.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from testkit.dockerd import last_line, signals_deferred

from .context import CLI, Bench

FLOOR_NAME = "benchfloor"  # the container whose bundle runc runs


class Unavailable(Exception):
    """A comparison cannot be measured here (or an overlayctl call failed); the message says why."""


def prepare_floor(
    stack: contextlib.ExitStack, ctx: Bench, image: str
) -> tuple[Callable[[], None], str, Callable[[], str]]:
    """One runc run of the prepared bundle, the row's note, and the check of runc list after the rounds.

    Container benchfloor, its overlay mounted in our namespace, the bundle
    and runc's state are undone when stack closes.  Raises Unavailable
    when runc is missing or overlayctl cannot prepare it.
    """
    runc = shutil.which("runc")
    if runc is None:
        raise Unavailable("runc is not installed")
    state_dir, bundle = ctx.base / "runc", ctx.base / "floor-bundle"
    stack.callback(remove_container, ctx, FLOOR_NAME)
    overlayctl(ctx, "run", "--name", FLOOR_NAME, image, "--", "true")
    config = json.loads(overlayctl(ctx, "container", "spec", FLOOR_NAME))
    stack.callback(unmount_container, ctx, FLOOR_NAME)
    overlayctl(ctx, "container", "mount", "--host", FLOOR_NAME)
    # The rest is the config overlayctl ran with, cgroupsPath included: runc
    # makes benchfloor's cgroup at each run and removes it at the run's exit.
    config["process"]["args"] = ["true"]
    config["process"]["terminal"] = False
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(config))
    stack.callback(sweep_runc, runc, state_dir)
    ids = itertools.count()

    def runc_run() -> None:
        argv = [runc, "--root", str(state_dir), "run", "-b", str(bundle), f"{FLOOR_NAME}-{next(ids)}"]
        done = subprocess.run(
            argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if done.returncode != 0:
            raise Unavailable(f"runc run: {last_line(done.stderr) or f'exit {done.returncode}'}")

    def verify() -> str:
        """What runc list holds after the rounds: nothing, runc deletes a foreground container at its exit."""
        try:
            left = runc_list(runc, state_dir)
        except (subprocess.SubprocessError, OSError) as exc:
            return f"runc list failed: {exc}"
        if left:
            print(f"bench: runc run left {left} in {state_dir}", file=sys.stderr)
            return f"runc list then held {len(left)} containers"
        return f"runc list empty after {next(ids)} runs"

    version = subprocess.run([runc, "--version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return runc_run, f"{version}, benchfloor's config.json (default profile), its root mounted --host", verify


def runc_list(runc: str, state_dir: Path) -> list[str]:
    if not state_dir.exists():
        return []
    done = subprocess.run([runc, "--root", str(state_dir), "list", "-q"], capture_output=True, text=True, check=True)
    return done.stdout.split()


def sweep_runc(runc: str, state_dir: Path) -> None:
    """Delete whatever the floor's runs left in their state dir, then the dir."""
    with signals_deferred():
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            for cid in runc_list(runc, state_dir):
                subprocess.run([runc, "--root", str(state_dir), "delete", "--force", cid], capture_output=True)
        shutil.rmtree(state_dir, ignore_errors=True)


def overlayctl(ctx: Bench, *args: str) -> str:
    """overlayctl ARGS on the bench store; its output.  Raises Unavailable with its error line when it fails."""
    store = ctx.store()
    done = subprocess.run(
        [CLI, "--root", store.layout.root, "--run-root", store.layout.run_root, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise Unavailable(f"overlayctl {' '.join(args[:2])}: {last_line(done.stderr) or f'exit {done.returncode}'}")
    return done.stdout


def unmount_container(ctx: Bench, name: str) -> None:
    with signals_deferred(), contextlib.suppress(Unavailable):
        overlayctl(ctx, "container", "unmount", name)


def remove_container(ctx: Bench, name: str) -> None:
    """overlayctl rm -f NAME; reported, not raised, when it fails (ctx.cleanup sweeps the store after)."""
    with signals_deferred():
        try:
            overlayctl(ctx, "rm", "-f", name)
        except Unavailable as exc:
            if "no such" not in str(exc).lower() and "not found" not in str(exc).lower():
                print(f"bench: {exc}", file=sys.stderr)
