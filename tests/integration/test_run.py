"""Running containers for real: namespaces, pivot_root, PID 1, limits, networks."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from overlayctl.kernel.proc import is_alive, wait_gone
from overlayctl.store.state import RunState

from ..cli import run_as_nobody, store_cmd

pytestmark = pytest.mark.root


@pytest.fixture
def ctl(busybox):
    """Run the overlayctl CLI as a real process against the test store.

    (busybox 1.35 wget crashes with -T: the tests use plain wget.)
    """
    store = busybox

    def run(*args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        result = subprocess.run(store_cmd(store, *args), capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr}")
        return result

    run.store = store
    try:
        yield run
    finally:
        # Stop whatever a failed test left running, then let the store fixture unmount.
        for state in store.containers.list():
            if state.run.status == "running":
                store.runtime.stop(state.record.id, timeout=0)


def leftovers(store, container_id: str) -> list[str]:
    """Everything a container may leave on the host, that is still there."""
    found = []
    for path in (store.layout.netns_pin(container_id), store.layout.pin(container_id)):
        if os.path.exists(path):
            found.append(path)
    for controller in ("memory", "pids", "cpu", "freezer", "unified", "."):  # v1 controllers, v2
        path = os.path.normpath(f"/sys/fs/cgroup/{controller}/overlayctl/{container_id}")
        if os.path.exists(path):
            found.append(path)
    if os.path.exists(f"/sys/class/net/veth{container_id[:8]}"):
        found.append(f"veth{container_id[:8]}")
    return found


def test_echo_and_exit_codes(ctl):
    assert ctl("run", "--rm", "busybox", "--", "echo", "hi").stdout == "hi\n"
    for code in (0, 1, 42):
        result = ctl("run", "--rm", "busybox", "--", "sh", "-c", f"exit {code}", check=False)
        assert result.returncode == code
    assert ctl.store.containers.list() == []


def cgroup_dirs() -> set[str]:
    base = "/sys/fs/cgroup/memory/overlayctl"
    return {d for d in os.listdir(base) if os.path.isdir(f"{base}/{d}")} if os.path.isdir(base) else set()


def test_rm_leaves_nothing(ctl):
    before = cgroup_dirs()
    ctl("run", "--rm", "--name", "gone", "--memory", "64m", "busybox", "--", "true")
    assert ctl.store.containers.list() == []
    assert not os.listdir(ctl.store.layout.containers)
    assert cgroup_dirs() == before
    for pins in (ctl.store.layout.netns_dir, ctl.store.layout.ns_dir):
        assert not os.path.exists(pins) or os.listdir(pins) == []


def test_hostname_hosts_and_init_layer(ctl):
    out = ctl(
        "run",
        "--rm",
        "--hostname",
        "box1",
        "busybox",
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; grep box1 /etc/hosts",
    ).stdout
    assert out.splitlines() == ["box1", "box1", "127.0.1.1\tbox1"]


def test_processes_are_the_containers_own(ctl):
    out = ctl("run", "--rm", "busybox", "--", "sh", "-c", "ls -d /proc/[0-9]*; cat /proc/1/status | grep ^NSpid").stdout
    pids = [line.rsplit("/", 1)[1] for line in out.splitlines() if line.startswith("/proc/")]
    assert "1" in pids and len(pids) <= 4  # init, sh, ls (and nothing of the host)
    nspid = [line for line in out.splitlines() if line.startswith("NSpid")][0].split()
    assert nspid[-1] == "1"  # the container's PID 1 is a process of its own namespace


def test_network_none_has_only_loopback_up(ctl):
    out = ctl(
        "run", "--rm", "busybox", "--", "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags; ip link"
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "lo" and int(lines[1], 16) & 1  # IFF_UP
    assert "eth0" not in out and "LOWER_UP" in out


def test_writes_land_in_the_upper_only(ctl):
    ctl("run", "--name", "w", "busybox", "--", "sh", "-c", "echo changed > /etc/motd; echo new > /root/new")
    store = ctl.store
    record = store.containers.get("w").record
    lower = store.layout.diff(store.images.get("busybox").layers[0])
    assert open(f"{lower}/etc/motd").read() == "from the image\n"
    assert open(f"{store.layout.upper(record.id)}/etc/motd").read() == "changed\n"
    changes = {(c.kind, c.path) for c in store.containers.diff("w")}
    assert ("C", "/etc/motd") in changes and ("A", "/root/new") in changes
    # The exited container's upper can be committed, as in Docker.
    ctl("container", "commit", "w", "busybox:changed")
    assert ctl("run", "--rm", "busybox:changed", "--", "cat", "/root/new").stdout == "new\n"
    assert ctl("run", "--rm", "busybox", "--", "cat", "/etc/motd").stdout == "from the image\n"
    ctl("rm", "w")


def test_two_containers_at_once_see_their_own_writes(ctl):
    ctl("run", "-d", "--name", "a", "busybox", "--", "sh", "-c", "echo a > /mine; sleep 30")
    ctl("run", "-d", "--name", "b", "busybox", "--", "sh", "-c", "echo b > /mine; sleep 30")
    time.sleep(0.3)
    assert ctl("exec", "a", "--", "cat", "/mine").stdout == "a\n"
    assert ctl("exec", "b", "--", "cat", "/mine").stdout == "b\n"
    ctl("stop", "-t", "0", "a")
    ctl("stop", "-t", "0", "b")
    ctl("rm", "a", "b")


def test_volumes(ctl, tmp_path):
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "in").write_text("from host\n")
    out = ctl(
        "run", "--rm", "-v", f"{tmp_path}/vol:/data", "busybox", "--", "sh", "-c", "cat /data/in; echo back > /data/out"
    ).stdout
    assert out == "from host\n" and (tmp_path / "vol" / "out").read_text() == "back\n"
    result = ctl(
        "run", "--rm", "-v", f"{tmp_path}/vol:/data:ro", "busybox", "--", "sh", "-c", "echo x > /data/x", check=False
    )
    assert result.returncode != 0 and "Read-only file system" in result.stderr
    assert not (tmp_path / "vol" / "x").exists()


def test_env_workdir_user(ctl):
    out = ctl(
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/srv/app",
        "-u",
        "65534:65534",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g",
    ).stdout
    assert out.splitlines() == ["bar", "/srv/app", "65534", "65534"]
    assert ctl("run", "--rm", "-u", "nobody", "busybox", "--", "id", "-un").stdout == "nobody\n"


def test_memory_limit_is_enforced_and_reported(ctl):
    result = ctl(
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "--",
        "sh",
        "-c",
        "head -c 200000000 /dev/zero | tr '\\0' a | sort > /dev/null",
        check=False,
    )
    assert result.returncode == 137
    info = json.loads(ctl("container", "inspect", "hog", "--json").stdout)
    assert info["oom_killed"] is True and info["exit_code"] == 137
    assert info["run"]["cgroup"]["limits"]["memory"] == 32 * 1024 * 1024
    record_id = info["id"]
    ctl("rm", "hog")
    assert leftovers(ctl.store, record_id) == []


def test_pids_limit_stops_a_fork_bomb(ctl):
    result = ctl(
        "run",
        "--rm",
        "--pids-limit",
        "16",
        "busybox",
        "--",
        "sh",
        "-c",
        "n=0; while [ $n -lt 100 ]; do sleep 5 & n=$((n+1)); done 2>/dev/null; echo done",
        check=False,
        timeout=60,
    )
    assert "can't fork" in result.stderr or result.returncode != 0


def test_detached_exec_stop_and_nothing_left(ctl):
    assert (
        ctl(
            "run",
            "-d",
            "--name",
            "bg",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo started; trap 'echo stopping; exit 3' TERM; while true; do sleep 0.1; done",
        ).stdout
        == "bg\n"
    )
    ps = json.loads(ctl("ps", "--json").stdout)
    assert ps[0]["name"] == "bg" and ps[0]["state"] == "running" and ps[0]["pid"] > 1
    assert "sh -c" in ctl("exec", "bg", "--", "ps").stdout
    assert ctl("exec", "bg", "--", "sh", "-c", "exit 5", check=False).returncode == 5
    record_id = ps[0]["id"]
    ctl("stop", "-t", "5", "bg")
    state = json.loads(ctl("ps", "-a", "--json").stdout)[0]
    assert state["state"] == "exited" and state["exit_code"] == 3
    assert ctl("logs", "bg").stdout == "started\nstopping\n"
    assert leftovers(ctl.store, record_id) == []
    ctl("rm", "bg")


def test_sigterm_reaches_the_container(ctl):
    script = "trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.1; done"
    cmd = store_cmd(ctl.store, "run", "--rm", "busybox", "--", "sh", "-c", script)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out == "got TERM\n" and proc.returncode == 9


def test_stdin_passes_through_with_i(ctl):
    assert (
        ctl("run", "--rm", "-i", "busybox", "--", "tr", "a-z", "A-Z", input="shout\n", stdin=None).stdout == "SHOUT\n"
    )
    assert ctl("run", "--rm", "busybox", "--", "cat").stdout == ""  # without -i: /dev/null


def run_then_kill(store, *args: str) -> RunState:
    """Start 'overlayctl run ARGS' (printing "ready" first), SIGKILL overlayctl; the container's state."""
    cmd = store_cmd(store, "run", *args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        state = store.containers.get("victim")
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return state


def test_killed_overlayctl_leaves_the_container_to_conmon(ctl):
    """As with docker or podman run: the container runs on, and its monitor cleans up when it ends."""
    state = run_then_kill(
        ctl.store, "--name", "victim", "--memory", "64m", "busybox", "--", "sh", "-c", "echo ready; sleep 60"
    )
    assert os.path.exists(f"/proc/{state.run.pid}") and os.path.exists(f"/proc/{state.run.monitor}")
    assert json.loads(ctl("ps", "--json").stdout)[0]["state"] == "running"
    ctl("stop", "-t", "1", "victim")
    listed = json.loads(ctl("ps", "-a", "--json").stdout)[0]
    assert listed["state"] == "exited" and listed["exit_code"] == 137 and listed["run"]["error"] == ""
    assert leftovers(ctl.store, state.record.id) == []
    ctl("rm", "victim")


def test_killed_monitor_leaves_no_leak(ctl):
    """SIGKILL of conmon: a listing shows the container exited; the next verb that changes state reaps it."""
    ctl("run", "-d", "--name", "victim", "--memory", "64m", "busybox", "--", "sleep", "60")
    state = ctl.store.containers.get("victim")
    os.kill(state.run.monitor, signal.SIGKILL)
    assert wait_gone(state.run.monitor, 5)
    listed = json.loads(ctl("ps", "-a", "--json").stdout)
    assert listed[0]["state"] == "exited" and "monitor died" in listed[0]["run"]["error"]
    assert leftovers(ctl.store, state.record.id) != []  # a listing reads; it does not clean up
    report = json.loads(ctl("check", "--repair", "--json").stdout)
    assert [p["message"] for p in report["removed"]] == ["container victim: its monitor died"]
    assert not is_alive(state.run.pid, state.run.pid_start)  # at most a zombie of the host's init
    assert leftovers(ctl.store, state.record.id) == []
    ctl("rm", "victim")


def test_detached_exit_code_is_written_by_conmon(ctl):
    """No overlayctl process waits for a detached container: conmon's exit command records its end."""
    ctl("run", "-d", "--name", "quick", "busybox", "--", "sh", "-c", "exit 7")
    deadline = time.time() + 20
    while ctl.store.containers.get("quick").run.status == "running" and time.time() < deadline:
        time.sleep(0.05)
    state = ctl.store.containers.get("quick")
    assert state.run.status == "exited" and state.run.exit_code == 7 and state.run.error == ""
    assert leftovers(ctl.store, state.record.id) == []
    ctl("rm", "quick")


def test_clear_errors(ctl, tmp_path):
    cases = [
        (["run", "--rm", "nosuchimage", "--", "true"], 1, "no such image: nosuchimage"),
        (["run", "--rm", "busybox", "--", "/no/such/cmd"], 127, "command not found in the container: /no/such/cmd"),
        (["run", "--rm", "busybox", "--", "nosuchcmd"], 127, "searched PATH=/usr/local/sbin"),
        (["run", "--rm", "-v", f"{tmp_path}/missing:/data", "busybox", "--", "true"], 1, "volume source"),
        (["run", "--rm", "--memory", "1k", "busybox", "--", "true"], 2, "--memory"),
    ]
    for args, code, message in cases:
        result = ctl(*args, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    ctl("run", "--name", "taken", "busybox", "--", "true")
    result = ctl("run", "--name", "taken", "busybox", "--", "true", check=False)
    assert result.returncode == 1 and "already taken" in result.stderr
    assert ctl.store.containers.list()[0].record.name == "taken" and len(ctl.store.containers.list()) == 1
    ctl("rm", "taken")


def test_not_root_is_refused_clearly(ctl):
    os.chmod(ctl.store.layout.root, 0o755)
    result = run_as_nobody(store_cmd(ctl.store, "run", "--rm", "busybox", "--", "true"))
    assert result.returncode == 1 and result.stderr.startswith("error:") and "root" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def bridge(ctl):
    """A bridge network of this test's own: a fresh name and subnet."""
    name = "ovt" + secrets.token_hex(3)
    subnet = f"10.214.{secrets.randbelow(200) + 20}.0/24"
    ctl("network", "set", "--bridge", name, "--subnet", subnet)
    try:
        yield name, subnet
    finally:
        if os.path.exists(f"/sys/class/net/{name}"):
            subprocess.run(["ip", "link", "del", name], check=False)


def test_bridge_containers_talk(ctl, bridge):
    name, subnet = bridge
    ctl(
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "bridge",
        "busybox",
        "--",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    )
    web = json.loads(ctl("container", "inspect", "web", "--json").stdout)
    server = web["address"].split("/")[0]
    out = ctl(
        "run",
        "--rm",
        "--network",
        "bridge",
        "busybox",
        "--",
        "sh",
        "-c",
        f"ip -4 -o addr show eth0; wget -q -O - http://{server}/index.html",
    ).stdout
    client = out.split()[3].split("/")[0]
    assert client != server and client.startswith(subnet.rsplit(".", 2)[0])
    assert out.endswith("hello from the web\n")
    assert os.path.exists(f"/sys/class/net/{name}")
    ctl("stop", "-t", "1", "web")
    ctl("rm", "web")
    assert not os.path.exists(f"/sys/class/net/{name}")  # removed when nothing uses it
    assert json.loads(ctl("network", "show", "--json").stdout)["addresses"] == {}
    assert leftovers(ctl.store, web["id"]) == []


def test_concurrent_runs_get_distinct_addresses(ctl, bridge):
    store = ctl.store
    cmd = store_cmd(
        store, "run", "--rm", "--network", "bridge", "busybox", "--", "sh", "-c", "ip -4 -o addr show eth0; sleep 1"
    )
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    addresses = [out.split()[3] for out, _ in outputs]
    assert len(set(addresses)) == 4


def test_image_config_from_import_and_commit(ctl, busybox_rootfs):
    ctl(
        "image",
        "import",
        str(busybox_rootfs),
        "--tag",
        "greeter",
        "--cmd",
        "sh -c 'echo $GREETING from $(pwd)'",
        "-e",
        "GREETING=hello",
        "-w",
        "/srv",
    )
    assert ctl("run", "--rm", "greeter").stdout == "hello from /srv\n"
    assert ctl("run", "--rm", "-e", "GREETING=hi", "greeter").stdout == "hi from /srv\n"
    ctl("run", "--name", "c", "greeter", "--", "touch", "/srv/made")
    ctl("container", "commit", "c", "greeter:2", "--entrypoint", '["ls"]', "--cmd", "/srv")
    assert ctl("run", "--rm", "greeter:2").stdout == "made\n"
    ctl("rm", "c")


def test_container_mount_refused_while_running(ctl):
    ctl("run", "-d", "--name", "busy", "busybox", "--", "sleep", "30")
    result = ctl("container", "mount", "busy", check=False)
    assert result.returncode == 1 and "is running" in result.stderr
    ctl("rm", "-f", "busy")
    assert ctl.store.containers.list() == []


def test_killed_monitor_on_the_bridge_leaves_no_leak(ctl, bridge):
    name, _ = bridge
    store = ctl.store
    ctl("run", "-d", "--name", "victim", "--network", "bridge", "busybox", "--", "sleep", "60")
    state = store.containers.get("victim")
    os.kill(state.run.monitor, signal.SIGKILL)
    assert wait_gone(state.run.monitor, 5)
    ctl("rm", "-f", "victim")  # a verb that changes state reaps
    assert leftovers(store, state.record.id) == []
    assert not os.path.exists(f"/sys/class/net/{name}")
    assert json.loads(ctl("network", "show", "--json").stdout)["addresses"] == {}


def test_none_network_path_does_not_import_pyroute2(busybox):
    code = (
        "import sys; from overlayctl import LayerStore;"
        f"s = LayerStore({busybox.layout.root!r}, {busybox.layout.run_root!r});"
        "code = s.runtime.run('busybox', ['true'], remove=True);"
        "print(code, 'pyroute2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "0 False\n"


def test_start_again_after_exit(ctl):
    ctl("run", "--name", "again", "busybox", "--", "sh", "-c", "date +%s%N >> /runs; wc -l < /runs")
    ctl("start", "again")
    for _ in range(100):
        if json.loads(ctl("ps", "-a", "--json").stdout)[0]["state"] == "exited":
            break
        time.sleep(0.05)
    assert ctl("logs", "again").stdout.split() == ["2"]  # the upper kept the first run's line
    ctl("rm", "again")


def test_running_container_mounts_and_killed_pid1(ctl):
    ctl("run", "-d", "--name", "k", "--pids-limit", "50", "busybox", "--", "sleep", "60")
    mounts = json.loads(ctl("mounts", "--container", "k", "--json").stdout)
    (root,) = [m for m in mounts if m["target"] == "/"]
    assert root["upper"]["store"]["kind"] == "upper" and root["lowers"][0]["store"]["kind"] == "init"
    state = json.loads(ctl("container", "inspect", "k", "--json").stdout)
    os.kill(state["pid"], signal.SIGKILL)  # the container's PID 1, from the host
    for _ in range(200):
        if json.loads(ctl("ps", "-a", "--json").stdout)[0]["state"] == "exited":
            break
        time.sleep(0.05)
    after = json.loads(ctl("ps", "-a", "--json").stdout)[0]
    assert after["state"] == "exited" and after["exit_code"] == 137
    assert leftovers(ctl.store, state["id"]) == []
    ctl("rm", "k")


def test_cpu_quota_is_set_while_running(ctl):
    ctl("run", "-d", "--name", "cpu", "--cpus", "0.5", "busybox", "--", "sleep", "30")
    state = json.loads(ctl("container", "inspect", "cpu", "--json").stdout)
    paths = state["run"]["cgroup"]["paths"]
    assert state["spec"]["limits"]["cpus"] == 0.5
    if "cpu" in paths:  # cgroup v1
        assert open(f"{paths['cpu']}/cpu.cfs_quota_us").read().strip() == "50000"
        assert str(state["pid"]) in open(f"{paths['cpu']}/cgroup.procs").read().split()
    else:  # cgroup v2
        assert open(f"{paths['unified']}/cpu.max").read().split()[0] == "50000"
    ctl("rm", "-f", "cpu")
    assert leftovers(ctl.store, state["id"]) == []
