"""Damage done by hand to a store: check names it, the rest keeps working, errors are one line.

The store holds two images with a layer each, "good" and "bad", a container
"ctr" of "bad" and a container "okc" of "good".  Each case damages one thing
of "bad"'s side (or tags.json), then:

* ``check --json`` reports a problem whose path or message points at it;
* the rest keeps working: ``image ls`` and ``container ls`` succeed and list
  the undamaged objects, the good image inspects by ID, a new container of
  the good image is created (by ID), mounted and unmounted;
* commands that touch the damaged object fail with one line on stderr,
  starting with "error:", exit code 1, no traceback;
* commands that may either work or refuse (a choice of the store) never
  print a traceback: they work, or fail with one "error:" line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field

import pytest

from ._stress import check, make_source, stress  # noqa: F401

pytestmark = pytest.mark.root


@dataclass
class Built:
    """The store of one test: IDs and paths of its objects."""

    root: str
    good: str  # image IDs
    bad: str
    good_layer: str
    bad_layer: str
    bad_link: str  # short link name of the bad image's layer
    ctr: str  # container ID of "ctr"
    okc: str

    def hex(self, digest: str) -> str:
        return digest.split(":", 1)[-1]


@dataclass
class Case:
    damage: object  # (Built) -> None
    names: object  # (Built) -> list of strings, one of which a problem's path or message must contain
    fails: list = field(default_factory=list)  # (Built) -> argv: must fail with a one-line error
    either: list = field(default_factory=list)  # (Built) -> argv: may work or fail, never a traceback
    tags_damaged: bool = False
    prepare: list = field(default_factory=list)  # argv run before the damage


def truncate_half(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def zero_fill(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(b"\0" * size)


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


CASES = {
    "layer-json-truncated": Case(
        damage=lambda b: truncate_half(f"{b.root}/layers/{b.hex(b.bad_layer)}/layer.json"),
        names=lambda b: [b.hex(b.bad_layer)],
        fails=[lambda b: ["layer", "inspect", b.bad_layer]],
        either=[
            lambda b: ["image", "inspect", "bad"],
            lambda b: ["layer", "ls"],
            lambda b: ["layer", "export", b.bad_layer, "-o", f"{os.path.dirname(b.root)}/export.tar"],
            lambda b: ["container", "create", "bad", "--name", "another"],
            lambda b: ["container", "mount", "ctr"],
        ],
    ),
    "diff-dir-missing": Case(
        damage=lambda b: shutil.rmtree(f"{b.root}/layers/{b.hex(b.bad_layer)}/diff"),
        names=lambda b: [b.hex(b.bad_layer)],
        fails=[
            lambda b: ["container", "mount", "ctr"],
            lambda b: ["layer", "export", b.bad_layer, "-o", f"{os.path.dirname(b.root)}/export.tar"],
        ],
        either=[
            lambda b: ["image", "inspect", "bad"],
            lambda b: ["layer", "inspect", b.bad_layer],
            lambda b: ["container", "create", "bad", "--name", "another"],
            lambda b: ["run", "--rm", "bad", "--", "true"],
        ],
    ),
    "tags-zero-filled": Case(
        damage=lambda b: zero_fill(f"{b.root}/tags.json"),
        names=lambda b: [f"{b.root}/tags.json"],
        fails=[lambda b: ["image", "inspect", "good"], lambda b: ["container", "create", "good", "--name", "another"]],
        either=[lambda b: ["image", "tag", b.good, "again:1"], lambda b: ["image", "rm", "bad"]],
        tags_damaged=True,
    ),
    # The same, with a size that is not a multiple of 4 (json then reads the
    # NULs as UTF-16/32 and fails with a UnicodeDecodeError, not a JSONDecodeError).
    "tags-zero-filled-odd-size": Case(
        prepare=[["image", "tag", "good", "good:1"]],
        damage=lambda b: zero_fill(f"{b.root}/tags.json"),
        names=lambda b: [f"{b.root}/tags.json"],
        fails=[lambda b: ["image", "inspect", "good"], lambda b: ["container", "create", "good", "--name", "another"]],
        either=[lambda b: ["image", "tag", b.good, "again:1"], lambda b: ["image", "rm", "bad"]],
        tags_damaged=True,
    ),
    "tags-text-garbage": Case(
        damage=lambda b: write(f"{b.root}/tags.json", b"this is not JSON {\n"),
        names=lambda b: [f"{b.root}/tags.json"],
        fails=[lambda b: ["image", "inspect", "good"], lambda b: ["container", "create", "good", "--name", "another"]],
        either=[lambda b: ["image", "tag", b.good, "again:1"], lambda b: ["image", "rm", "bad"]],
        tags_damaged=True,
    ),
    "short-link-deleted": Case(
        damage=lambda b: os.unlink(f"{b.root}/l/{b.bad_link}"),
        names=lambda b: [f"{b.root}/l/{b.bad_link}", b.bad_link, b.hex(b.bad_layer)],
        either=[lambda b: ["container", "mount", "ctr", "--api", "classic"]],
    ),
    "image-record-invalid": Case(
        damage=lambda b: write(f"{b.root}/images/{b.hex(b.bad)}.json", b'{"rootfs": {"diff_ids": [\n'),
        names=lambda b: [b.hex(b.bad)],
        fails=[
            lambda b: ["image", "inspect", "bad"],
            lambda b: ["image", "inspect", b.bad],
            lambda b: ["container", "create", "bad", "--name", "another"],
        ],
        either=[lambda b: ["image", "rm", "bad"], lambda b: ["image", "tree"], lambda b: ["container", "mount", "ctr"]],
    ),
    "container-json-truncated": Case(
        damage=lambda b: truncate_half(f"{b.root}/containers/{b.ctr}/container.json"),
        names=lambda b: [b.ctr, "ctr"],
        fails=[lambda b: ["container", "inspect", "ctr"], lambda b: ["container", "mount", "ctr"]],
        either=[lambda b: ["container", "rm", "ctr"], lambda b: ["image", "rm", "bad"], lambda b: ["ps", "-a"]],
    ),
}


def build(stress, tmp_path) -> Built:  # noqa: F811
    cli = stress.cli
    rng = random.Random(7)
    good = cli.ok("image", "import", str(make_source(tmp_path / "good", rng, "good", 8192)), "--tag", "good").stdout
    bad = cli.ok("image", "import", str(make_source(tmp_path / "bad", rng, "bad", 8192)), "--tag", "bad").stdout
    good, bad = good.strip(), bad.strip()
    ctr = cli.json("container", "create", "bad", "--name", "ctr", "--json")["id"]
    okc = cli.json("container", "create", "good", "--name", "okc", "--json")["id"]
    images = {i["id"]: i for i in cli.json("image", "ls", "--json")}
    (good_layer,), (bad_layer,) = images[good]["layers"], images[bad]["layers"]
    bad_link = cli.json("layer", "inspect", bad_layer, "--json")["link"]
    return Built(stress.root, good, bad, good_layer, bad_layer, bad_link, ctr, okc)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_damage(case, stress, tmp_path):  # noqa: F811
    spec = CASES[case]
    store = build(stress, tmp_path)
    cli = stress.cli
    for args in spec.prepare:
        cli.ok(*args)
    spec.damage(store)

    # Every expectation is checked; all that fail are reported together.
    wrong: list[str] = []

    result, report = check(cli)
    needles = spec.names(store)
    named = [p for p in report["problems"] if any(n in p["path"] or n in p["message"] for n in needles)]
    if result.returncode != 1 or not named:
        wrong.append(f"check does not name the damage (any of {needles}):\n{result.describe()}")

    # The rest keeps working.
    for args in (["image", "ls", "--json"], ["container", "ls", "--json"]):
        listed = cli.run(*args)
        if not listed.ok or listed.traceback:
            wrong.append(f"{' '.join(args)} does not work:\n{listed.describe()}")
            continue
        ids = {item["id"] for item in json.loads(listed.stdout)}
        want = {store.good} if args[0] == "image" else {store.okc}
        if not want <= ids:
            wrong.append(f"{' '.join(args)} does not list the undamaged {want}:\n{listed.describe()}")
    for args in (
        ["image", "inspect", store.good, "--json"],
        ["container", "inspect", "okc", "--json"],
        ["container", "create", store.good, "--name", "fresh"],
        ["container", "mount", "fresh"],
        ["container", "unmount", "fresh"],
    ):
        done = cli.run(*args)
        if not done.ok or done.traceback:
            wrong.append(f"{' '.join(args)} (undamaged objects) does not work:\n{done.describe()}")
            if args[1] == "create":
                break  # no container to mount
    if not spec.tags_damaged:
        done = cli.run("image", "inspect", "good", "--json")
        if not done.ok:
            wrong.append(f"image inspect good does not work:\n{done.describe()}")

    # What touches the damaged object fails with one line.
    for make in spec.fails:
        args = make(store)
        failed = cli.run(*args)
        if not failed.clean_error:
            wrong.append(f"{' '.join(args)} (damaged object) does not fail with a one-line error:\n{failed.describe()}")
    for make in spec.either:
        args = make(store)
        done = cli.run(*args)
        lines = done.stderr.strip().splitlines()
        one_line = len(lines) == 1 and lines[0].startswith("error:") and done.returncode not in (0, None)
        if done.traceback or not (done.ok or one_line):  # run's setup failures exit 125, as Docker's
            wrong.append(f"{' '.join(args)} neither works nor fails with a one-line error:\n{done.describe()}")

    if wrong:
        pytest.fail(f"{len(wrong)} expectations failed for damage {case!r}:\n\n" + "\n\n".join(wrong), pytrace=False)
