"""The OCI runtime path: config.json as the one profile, the bundle by hand, terminals, --userns=auto."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from overlayctl.runtime.profile import DEFAULT_CAPS

from ..cli import run_on_a_terminal, store_cmd
from . import test_run

pytestmark = pytest.mark.root

ctl = test_run.ctl  # the fixture: overlayctl as a real process against a store holding busybox


def test_inspect_and_spec_show_the_one_profile(ctl, tmp_path):
    ctl("container", "create", "busybox", "--name", "plain")  # no command: no config
    assert "oci_config" not in json.loads(ctl("container", "inspect", "plain", "--json").stdout)
    ctl("run", "--name", "c", "--cap-add", "NET_ADMIN", "busybox", "--", "true")
    config = json.loads(ctl("container", "spec", "c").stdout)
    caps = config["process"]["capabilities"]
    assert sorted(caps["bounding"]) == sorted(f"CAP_{c}" for c in (*DEFAULT_CAPS, "NET_ADMIN"))
    assert caps["inheritable"] == caps["ambient"] == []
    assert "/proc/kcore" in config["linux"]["maskedPaths"] and "/proc/sys" in config["linux"]["readonlyPaths"]
    assert config["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert config["root"]["path"] == ctl.store.layout.merged(ctl.store.containers.get("c").record.id)
    inspected = json.loads(ctl("container", "inspect", "c", "--json").stdout)
    assert inspected["oci_config"] == config
    assert "15 capabilities, seccomp" in ctl("container", "inspect", "c").stdout
    ctl("rm", "c", "plain")


def test_the_bundle_runs_by_hand_with_runc(ctl, tmp_path):
    """container spec -o DIR + container mount --host: any OCI runtime runs the container the same way."""
    ctl("container", "create", "busybox", "--name", "byhand")
    config = json.loads(ctl("container", "spec", "byhand").stdout)  # never ran: the config it would run with
    bundle = tmp_path / "bundle"
    assert ctl("container", "spec", "byhand", "-o", str(bundle)).stdout.strip() == f"{bundle}/config.json"
    assert json.loads((bundle / "config.json").read_text()) == config
    config["process"]["args"] = ["sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status; echo made > /byhand"]
    (bundle / "config.json").write_text(json.dumps(config))
    state = tmp_path / "runc"
    ctl("container", "mount", "--host", "byhand")
    try:
        result = subprocess.run(
            ["runc", "--root", str(state), "run", "-b", str(bundle), "byhand-test"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", "byhand-test"], capture_output=True)
        ctl("container", "unmount", "byhand")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CapEff:", "00000000a80425fb", "Seccomp:", "2"]
    assert json.loads(ctl("container", "diff", "byhand", "--json").stdout)[0]["path"] == "/byhand"
    ctl("rm", "byhand")


def test_info_names_the_runtime_and_why(ctl):
    data = json.loads(ctl("info", "--json").stdout)["containers"]
    assert data["runtime"]["name"] in ("runc", "crun") and os.access(data["runtime"]["path"], os.X_OK)
    if shutil.which("crun") and data["hybrid_cgroups"]:
        assert "crun" in data["runtime"]["reason"] and "hybrid" in data["runtime"]["reason"]
    assert data["monitor"]["name"] == "conmon" and data["monitor"]["version"]
    text = ctl("info").stdout
    assert "OCI runtime:" in text and "why:" in text and "monitor:           conmon" in text


def test_unknown_runtime_and_refused_flags_are_one_line(ctl):
    cases = [
        (
            ["run", "--rm", "--runtime", "nosuchruntime", "busybox", "--", "true"],
            "OCI runtime 'nosuchruntime' not found",
        ),
        (["run", "--rm", "--cap-add", "NOPE", "busybox", "--", "true"], "unknown capability 'NOPE'"),
        (["run", "--rm", "--security-opt", "apparmor=x", "busybox", "--", "true"], "invalid --security-opt"),
        (["run", "--rm", "--device", "/dev/nosuchdevice", "busybox", "--", "true"], "device /dev/nosuchdevice"),
        (["run", "-d", "-t", "busybox", "--", "sh"], "has a terminal"),
    ]
    for args, message in cases:
        result = ctl(*args, check=False)
        assert result.returncode in (1, 2) and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for state in ctl.store.containers.list():
        ctl("rm", state.record.id)


def test_run_and_exec_with_a_terminal(ctl):
    # The runtime sets the window size just after the command starts: ask until it is there.
    script = (
        "test -t 0 && test -t 1 && echo ON-A-TTY; for i in 1 2 3 4 5 6 7 8 9; do"
        ' s=$(stty size 2>/dev/null); [ -n "$s" ] && [ "$s" != "0 0" ] && break; sleep 0.2; done; echo "size $s"; exit 4'
    )
    code, output = run_on_a_terminal(
        store_cmd(ctl.store, "run", "--rm", "-it", "busybox", "--", "sh", "-c", script), 31, 97
    )
    assert code == 4 and "ON-A-TTY" in output and "size 31 97" in output, output
    ctl("run", "-d", "--name", "t", "busybox", "--", "sleep", "60")
    code, output = run_on_a_terminal(store_cmd(ctl.store, "exec", "-it", "t", "sh", "-c", script), 20, 50)
    assert code == 4 and "ON-A-TTY" in output and "size 20 50" in output, output
    ctl("rm", "-f", "t")
    assert ctl.store.containers.list() == []


def test_userns_auto_root_is_nobody_on_the_host(busybox_searchable):
    searchable = busybox_searchable

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(store_cmd(searchable, *args), capture_output=True, text=True, timeout=60)

    secret = f"{os.path.dirname(searchable.layout.root)}/secret"
    with open(secret, "w") as f:
        f.write("host secret\n")
    os.chmod(secret, 0o600)
    script = "cat /secret; echo $?; id -u; echo new > /made; mkdir /owned; chown 1000:1000 /owned"
    for name in ("a", "b"):
        result = ctl(
            "run", "--name", name, "--userns", "auto", "-v", f"{secret}:/secret", "busybox", "--", "sh", "-c", script
        )
        assert "host secret" not in result.stdout and "Permission denied" in result.stderr
        assert result.stdout.split() == ["1", "0"]  # cat failed; the container's uid is 0
    ranges = json.loads(open(searchable.layout.idranges_json).read())["ranges"]
    ids = {name: searchable.containers.get(name).record.id for name in ("a", "b")}
    start_a, start_b = (ranges[ids[n]]["start"] for n in ("a", "b"))
    assert start_a != start_b and abs(start_a - start_b) >= ranges[ids["a"]]["size"]  # two ranges, no overlap
    upper = searchable.layout.upper(ids["a"])
    assert (os.stat(f"{upper}/made").st_uid, os.stat(f"{upper}/owned").st_uid) == (start_a, start_a + 1000)
    # Nothing copied: both containers see the image's busybox with the same inode.
    inodes = [ctl("run", "--rm", "--userns", "auto", "busybox", "--", "stat", "-c", "%i %u", "/bin/busybox").stdout]
    inodes.append(ctl("run", "--rm", "busybox", "--", "stat", "-c", "%i %u", "/bin/busybox").stdout)
    assert inodes[0] == inodes[1] and inodes[0].split()[1] == "0"
    # commit gives the layer the container's own IDs back.
    assert ctl("container", "commit", "a", "committed:1").returncode == 0
    listing = ctl("run", "--rm", "committed:1", "--", "stat", "-c", "%n %u %g", "/made", "/owned").stdout
    assert listing.split("\n")[:2] == ["/made 0 0", "/owned 1000 1000"]
    for name in ("a", "b"):
        assert ctl("rm", name).returncode == 0
    assert json.loads(open(searchable.layout.idranges_json).read())["ranges"] == {}
