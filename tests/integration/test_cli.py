"""The command line: exit codes, one-line errors, --json, the main verbs.

Each call runs in this process through the real entry point (overlayctl.cli.main,
under click's CliRunner): the exit code, stdout and stderr are what a user sees.
Only a verb that replaces the process (container enter execs) runs as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from ..cli import store_cli, store_cmd

pytestmark = pytest.mark.root


def _checked(args, result: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    if check:
        if result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr}")
        assert result.stderr == "", f"{args} succeeded but wrote to stderr: {result.stderr}"
    return result


@pytest.fixture
def cli(store):
    """Run overlayctl in this process against the test store, as main() would."""

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return _checked(args, store_cli(store, *args, input=input), check)

    return run


@pytest.fixture
def cli_process(store):
    """Run overlayctl as a subprocess: for verbs that exec (container enter), which CliRunner cannot capture."""

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(store_cmd(store, *args), check=False, capture_output=True, text=True, input=input)
        return _checked(args, result, check)

    return run


def test_image_and_container_lifecycle(cli, cli_process, rootfs):
    image_id = cli("image", "import", str(rootfs), "--tag", "base").stdout.strip()
    assert image_id.startswith("sha256:")
    images = json.loads(cli("image", "ls", "--json").stdout)
    assert images[0]["id"] == image_id and images[0]["tags"] == ["base:latest"]
    assert cli("container", "create", "base", "--name", "web").stdout.strip() == "web"
    merged = cli("container", "mount", "web").stdout.strip()
    assert merged.endswith("/merged")
    out = cli_process("container", "enter", "web", "--", "cat", "etc/motd").stdout
    assert out == "welcome\n"
    cli_process("container", "enter", "web", "--", "sh", "-c", "echo hi > etc/motd && rm data/old.txt")
    diff = cli("container", "diff", "web").stdout.splitlines()
    assert "C /etc/motd" in diff and "D /data/old.txt" in diff
    listed = json.loads(cli("container", "ls", "--json").stdout)
    assert listed[0]["name"] == "web" and listed[0]["mounted"] == "namespace"
    inspect = json.loads(cli("container", "inspect", "web", "--json").stdout)
    assert inspect["plan"]["labels"][0] == "init" and len(inspect["plan"]["lowers"]) == 2
    mounts = json.loads(cli("mounts", "--container", "web", "--json").stdout)
    (ours,) = [m for m in mounts if m["target"] == merged]  # the host's other overlays are copied in too
    assert ours["upper"]["store"]["kind"] == "upper"
    new_id = cli("container", "commit", "web", "base:v2", "-m", "hello").stdout.strip()
    history = json.loads(cli("image", "history", "base:v2", "--json").stdout)
    assert history[0]["comment"] == "hello" and len(history) == 2
    tree = cli("image", "tree").stdout
    assert "base:latest" in tree and "└─" in tree and "base:v2" in tree
    assert json.loads(cli("image", "inspect", "base:v2", "--json").stdout)["id"] == new_id
    cli("container", "unmount", "web")
    cli("container", "rm", "web")
    assert json.loads(cli("container", "ls", "--json").stdout) == []


def test_layer_commands(cli, rootfs, tmp_path):
    layer_id = cli("layer", "create", "--from", str(rootfs), "-m", "base").stdout.strip()
    layers = json.loads(cli("layer", "ls", "--json").stdout)
    assert layers[0]["id"] == layer_id and layers[0]["comment"] == "base"
    inspect = json.loads(cli("layer", "inspect", layer_id[7:15], "--json").stdout)
    assert os.path.isdir(inspect["diff"]) and inspect["used_by"] == []
    out = tmp_path / "layer.tar"
    exported = cli("layer", "export", layer_id, "-o", str(out), check=False)
    # With -o, stdout stays free: the digest of what was written goes to stderr.
    assert exported.returncode == 0 and exported.stdout == "" and exported.stderr == layer_id + "\n"
    assert "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest() == layer_id
    assert cli("layer", "rm", layer_id).stdout.strip() == layer_id


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["image", "inspect", "nope"], 1, "error: no such image: nope"),
        (["container", "mount", "ghost"], 1, "error: no such container: ghost"),
        (["layer", "create", "--from", "/does/not/exist"], 1, "error: no such file or directory: /does/not/exist"),
        (["container", "create", "base", "-o", "bogus"], 2, "error: unknown overlay option 'bogus'"),
        (["image", "tag", "base", "Bad:Tag:x"], 2, "error: invalid image reference"),
        (["container", "bogus-verb"], 2, "No such command"),
    ],
    ids=["unknown-image", "unknown-container", "missing-source", "bad-option", "bad-ref", "usage"],
)
def test_errors_are_one_line(cli, rootfs, args, code, message):
    cli("image", "import", str(rootfs), "--tag", "base")
    result = cli(*args, check=False)
    assert result.returncode == code
    assert message in result.stderr
    assert result.stdout == ""
    if message.startswith("error: "):
        # Our errors, whatever their exit code: exactly one line, no traceback.
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith(message) and result.stderr.endswith("\n")
    else:
        # A usage error is click's: the usage line, then the error.
        assert result.stderr.startswith("Usage: overlayctl ") and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(cli):
    result = cli("--debug", "image", "inspect", "nope", check=False)
    assert result.returncode == 1 and "Traceback" in result.stderr
    # The traceback comes first; the same one line as without --debug ends the output.
    assert result.stderr.splitlines()[-1].startswith("error: no such image: nope")


def test_info(cli):
    info = json.loads(cli("info", "--json").stdout)
    assert info["overlay"] is True and info["mount_api"] == "new" and info["max_lower_layers"] == 500
    assert info["backing"]["d_type"] is True
    assert "mount API:" in cli("info").stdout


def test_union_mount_commands(cli, tmp_path):
    for d in ("top", "bottom", "rw", "target"):
        (tmp_path / d).mkdir()
    (tmp_path / "top" / "a").write_text("top")
    (tmp_path / "bottom" / "a").write_text("bottom")
    (tmp_path / "bottom" / "b").write_text("b")
    target = str(tmp_path / "target")
    cli(
        "mount",
        "--lower",
        str(tmp_path / "top"),
        "--lower",
        str(tmp_path / "bottom"),
        "--upper",
        str(tmp_path / "rw"),
        target,
    )
    try:
        assert (tmp_path / "target" / "a").read_text() == "top"
        (tmp_path / "target" / "c").write_text("new")
        assert (tmp_path / "rw" / "c").read_text() == "new"
        assert os.path.isdir(tmp_path / ".rw.overlayctl-work")
        [report] = [m for m in json.loads(cli("mounts", "--json").stdout) if m["target"] == target]
        assert [entry["path"] for entry in report["lowers"]] == [str(tmp_path / "top"), str(tmp_path / "bottom")]
        assert report["lowers"][0]["store"] is None
    finally:
        cli("umount", target)
    assert not os.path.exists(tmp_path / ".rw.overlayctl-work")
    # Read-only with a single lower.
    cli("mount", "--lower", str(tmp_path / "top"), target)
    try:
        with pytest.raises(OSError):
            (tmp_path / "target" / "x").write_text("no")
    finally:
        cli("umount", target)
