"""Running the overlayctl CLI as a real process in tests: the command line, as root or as nobody."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


def overlayctl_cmd(root: str, run_root: str | None, *args: str) -> list[str]:
    """``python -m overlayctl --root ROOT [--run-root RUN] ARGS``."""
    cmd = [sys.executable, "-m", "overlayctl", "--root", root]
    if run_root is not None:
        cmd += ["--run-root", run_root]
    return cmd + list(args)


def store_cmd(store, *args: str) -> list[str]:
    """The command line of ``overlayctl ARGS`` against a test store."""
    return overlayctl_cmd(store.layout.root, store.layout.run_root, *args)


def run_as_nobody(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run cmd as the unprivileged user nobody, with no capabilities, finding this checkout."""
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(NOBODY + cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
