"""A busybox root filesystem for tests and benchmarks, from the host's static busybox."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/motd": "from the image\n",
    "var/www/index.html": "hello from the web\n",
}
DIRS = ("bin", "etc", "tmp", "root", "var/www", "srv")


def build_busybox_rootfs(root: Path) -> int | None:
    """Fill root with busybox, all its applet links and a few files; the applet count.

    None when the host has no busybox (make deps installs busybox-static).
    """
    busybox = shutil.which("busybox")
    if busybox is None:
        return None
    for sub in DIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    for rel, text in FILES.items():
        (root / rel).write_text(text)
    return len(applets)


def files_of(root) -> set[str]:
    """Every path under root, relative to it (directories and files)."""
    found = set()
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(d, name), root))
    return found
