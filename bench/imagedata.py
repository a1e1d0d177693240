"""The ``images`` family's archives, built once and cached in ``bench/.cache/`` (not committed).

Archive A (``layered.tar``): a Debian bookworm minbase root filesystem
(``debootstrap --variant=minbase`` from the machine's apt mirror) imported
into Docker, then three change layers made as Docker makes them
(``docker run`` + ``docker commit``): files deleted, a directory replaced
(an opaque whiteout), files added; ``docker save``.  When debootstrap
cannot run, the base is the host's busybox plus copies of
``/usr/lib/python3*`` and ``/usr/share`` (real files), and the archive's
note says so.

Archive B (``smallfiles.tar``): one layer of 20,000 small random files
(0-4 KiB) and three 50 MiB random files, written with tarfile, wrapped by
``docker import`` + ``docker save``.

Each archive is written to a temporary name and renamed when complete; a
missing archive (or note) is rebuilt.  Everything made in Docker while
building is removed again.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import random
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from testkit.dockerd import Docker, DockerUnavailable
from testkit.rootfs import build_busybox_rootfs

CACHE = Path(__file__).resolve().parent / ".cache"
LAYERED = CACHE / "layered.tar"
SMALL = CACHE / "smallfiles.tar"
NOTES = CACHE / "notes.json"
LAYERED_TAG = "overlayctl-bench/layered:latest"
SMALL_TAG = "overlayctl-bench/smallfiles:latest"
BUILD_REPO = "overlayctl-bench/layered-build"
SMALL_FILES = 20_000
SMALL_MAX = 4096
BIG_FILES = 3
BIG_SIZE = 50 * 1024 * 1024
DEBOOTSTRAP_TIMEOUT = 1200

# The three change layers of archive A, each one 'docker run' + 'docker commit'.
CHANGES = (
    (
        "files deleted",
        (
            "rm -rf /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale"
            " && rm -f /etc/motd /etc/issue /etc/issue.net"
        ),
    ),
    (
        "a dir replaced",
        (
            "rm -rf /usr/share/common-licenses && mkdir -p /usr/share/common-licenses"
            " && for i in 1 2 3 4 5; do echo license $i > /usr/share/common-licenses/L$i; done"
        ),
    ),
    (
        "files added",
        (
            "mkdir -p /opt/app/data && i=0; while [ $i -lt 500 ]; do"
            " head -c $((i * 37)) /dev/urandom > /opt/app/data/f$i; i=$((i + 1)); done"
            " && head -c 20000000 /dev/urandom > /opt/app/blob && echo added > /etc/motd"
        ),
    ),
)


def notes() -> dict[str, str]:
    """What the cached archives hold (the base of A: debootstrap or the fallback)."""
    try:
        return json.loads(NOTES.read_text())
    except (OSError, ValueError):
        return {}


def missing() -> list[Path]:
    found = notes()
    return [path for path in (LAYERED, SMALL) if not path.is_file() or path.name not in found]


def ensure(docker: Docker | None, work: Path) -> dict[str, str]:
    """Build whichever archive is missing (in work, a new dir); their notes by file name."""
    todo = missing()
    if not todo:
        return notes()
    if docker is None:
        raise RuntimeError(f"bench/.cache lacks {', '.join(p.name for p in todo)} and Docker is unavailable")
    CACHE.mkdir(exist_ok=True)
    work.mkdir()
    found = notes()
    try:
        for path in todo:
            start = time.perf_counter()
            print(f"(images: building {path.relative_to(CACHE.parent.parent)} ...)", flush=True)
            if path == LAYERED:
                found[path.name] = build_layered(docker, work)
            else:
                found[path.name] = build_small(docker, work)
            found[path.name + ":built_s"] = f"{time.perf_counter() - start:.0f}"
            NOTES.write_text(json.dumps(found, indent=2) + "\n")
            print(f"(images: {path.name} built in {time.perf_counter() - start:.0f} s: {found[path.name]})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return found


def apt_mirror() -> str:
    """The Debian mirror for bookworm from /etc/apt/sources.list(.d): the first that serves 'bookworm'."""
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
    for name in files:
        with contextlib.suppress(OSError):
            text = Path(name).read_text()
            if name.endswith(".sources"):  # deb822 stanzas
                for stanza in re.split(r"\n\s*\n", text):
                    fields = {}
                    for line in stanza.splitlines():
                        key, _, value = line.partition(":")
                        if not line.lstrip().startswith("#") and value.strip():
                            fields[key.strip().lower()] = value.strip()
                    if "deb" in fields.get("types", "").split() and "bookworm" in fields.get("suites", "").split():
                        return fields["uris"].split()[0]
            else:
                for line in text.splitlines():
                    words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                    if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                        return words[1]
    return "http://deb.debian.org/debian"


def debootstrap(root: Path) -> str:
    """A minbase bookworm in root; its note.  Raises RuntimeError with the reason when it cannot run."""
    if shutil.which("debootstrap") is None:
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", "debootstrap"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or shutil.which("debootstrap") is None:
            raise RuntimeError(f"apt-get install debootstrap failed: {done.stderr.strip()[-200:]}")
    mirror = apt_mirror()
    try:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), mirror],
            capture_output=True,
            text=True,
            check=False,
            timeout=DEBOOTSTRAP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise RuntimeError(f"debootstrap failed: {lines[-1] if lines else done.returncode}")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    return f"Debian bookworm minbase (debootstrap from {mirror})"


def fallback_rootfs(root: Path, why: str) -> str:
    """The host's busybox plus copies of /usr/lib/python3* and /usr/share; its note."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    if build_busybox_rootfs(root) is None:
        raise RuntimeError(f"{why}; and no busybox for the fallback rootfs")
    for src in sorted(glob.glob("/usr/lib/python3*")) + ["/usr/share"]:
        dest = root / src.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest, symlinks=True, ignore_dangling_symlinks=True, dirs_exist_ok=True)
    return f"FALLBACK rootfs (busybox + host /usr/lib/python3* + /usr/share), debootstrap unusable: {why}"


def build_layered(docker: Docker, work: Path) -> str:
    """Archive A; its note."""
    root = work / "rootfs"
    try:
        base_note = debootstrap(root)
    except RuntimeError as exc:
        print(f"(images: {exc}; falling back to a rootfs of host files)", flush=True)
        base_note = fallback_rootfs(root, str(exc))
    tags = [f"{BUILD_REPO}:base", f"{BUILD_REPO}:1", f"{BUILD_REPO}:2", LAYERED_TAG]
    containers: list[str] = []
    try:
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            docker.call("import", "-", tags[0], stdin=tar.stdout, timeout=600)
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError(f"tar of {root} failed (exit {tar.returncode})")
        shutil.rmtree(root, ignore_errors=True)
        for (what, script), parent, tag in zip(CHANGES, tags, tags[1:]):
            name = f"overlayctl-bench-build-{len(containers)}"
            containers.append(name)
            docker.call("run", "--name", name, "--network", "none", parent, "/bin/sh", "-c", script, timeout=600)
            docker.call("commit", "-m", what, name, tag, timeout=600)
            docker.call("rm", name)
            containers.remove(name)
        part = LAYERED.with_suffix(".part")
        docker.call("save", "-o", str(part), LAYERED_TAG, timeout=600)
        part.rename(LAYERED)
    finally:
        for name in containers:
            with contextlib.suppress(DockerUnavailable):
                docker.call("rm", "-f", name)
        for tag in reversed(tags):
            with contextlib.suppress(DockerUnavailable):
                docker.call("rmi", "-f", tag)
    return f"{base_note} + 3 change layers ({'; '.join(what for what, _ in CHANGES)})"


def build_small(docker: Docker, work: Path) -> str:
    """Archive B; its note."""
    layer = work / "small-layer.tar"
    rng = random.Random(20_000)
    big = work / "big.bin"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        per_dir = 100

        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
            tar.addfile(info)

        add_dir("data")
        for i in range(SMALL_FILES):
            if i % per_dir == 0:
                add_dir(f"data/d{i // per_dir:03d}")
            size = rng.randint(0, SMALL_MAX)
            info = tarfile.TarInfo(f"data/d{i // per_dir:03d}/f{i % per_dir:03d}")
            info.size, info.mode, info.mtime = size, 0o644, 1_600_000_000
            tar.addfile(info, io.BytesIO(os.urandom(size)))
        add_dir("big")
        for i in range(BIG_FILES):
            with open(big, "wb") as f:
                f.writelines(os.urandom(1 << 20) for _ in range(BIG_SIZE // (1 << 20)))
            tar.add(big, arcname=f"big/blob{i}")
    big.unlink()
    try:
        docker.call("import", str(layer), SMALL_TAG, timeout=600)
        part = SMALL.with_suffix(".part")
        docker.call("save", "-o", str(part), SMALL_TAG, timeout=600)
        part.rename(SMALL)
    finally:
        with contextlib.suppress(DockerUnavailable):
            docker.call("rmi", "-f", SMALL_TAG)
    return f"1 layer: {SMALL_FILES} random files of 0-{SMALL_MAX // 1024} KiB + {BIG_FILES} x 50 MiB random"


def archive_layers(archive: Path, dest: Path) -> tuple[list[str], list[Path]]:
    """The archive's tags and its layer tars copied out into dest (bottom first), as the tar floor's input."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        entry = manifest[0]
        layers = []
        for i, member in enumerate(entry["Layers"]):
            out = dest / f"layer{i}.tar"
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{archive}: layer {member} is not a file")
            with src, open(out, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
            layers.append(out)
    return list(entry.get("RepoTags") or []), layers
