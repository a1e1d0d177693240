"""Demo step: images both ways between overlayctl and Docker, through a private dockerd.

Usage: python demo/docker_trade.py OVERLAYCTL ROOT RUN_ROOT TMP IMAGE
Prints each command as a shell would show it, then its output.  Where
Docker cannot run, says so in one line and exits 0 (the demo goes on).
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # testkit, from the repository root

from testkit.dockerd import DockerUnavailable, docker_engine  # noqa: E402


def show(argv: list[str], tmp: str) -> str:
    print("$ " + " ".join(shlex.quote(a) for a in argv).replace(tmp, "$TMP"), flush=True)
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    print(out.replace(tmp, "$TMP"), end="", flush=True)
    return out


def main(overlayctl: str, root: str, run_root: str, tmp: str, image: str) -> int:
    oc = [overlayctl, "--root", root, "--run-root", run_root]
    oc2 = [overlayctl, "--root", f"{tmp}/store2", "--run-root", run_root]  # a second, empty store
    ref = "overlayctl-demo/busybox:v2"
    try:
        engine = contextlib.ExitStack()
        docker = engine.enter_context(docker_engine(Path(tmp) / "dockerd"))
    except DockerUnavailable as exc:
        print(f"# skipped: Docker cannot run here ({exc})")
        return 0
    with engine:
        dk = docker.argv()
        try:
            print(f"# {docker.where} {docker.version}: overlayctl image save -> docker load -> docker run")
            show([*oc, "image", "tag", image, ref], tmp)
            show([*oc, "image", "save", ref, "-o", f"{tmp}/v2.tar"], tmp)
            show([*dk, "load", "-i", f"{tmp}/v2.tar"], tmp)
            show([*dk, "run", "--rm", "--network", "none", ref, "cat", "/etc/motd"], tmp)
            print("# and back: docker save -> overlayctl image load, same image ID, same layers")
            show([*dk, "save", "-o", f"{tmp}/from-docker.tar", ref], tmp)
            show([*oc, "image", "rm", ref], tmp)
            show([*oc2, "image", "load", "-i", f"{tmp}/from-docker.tar"], tmp)
            show([*oc2, "image", "ls"], tmp)
        finally:
            subprocess.run([*dk, "rmi", "-f", ref], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
