"""The repo's entry points: Makefile, .ci/run, the Vagrant VM, README, .gitignore.

These check what can be checked without booting a VM: the Vagrantfile validates
(offline, with a throw-away VAGRANT_HOME), the shell scripts parse and are
shellcheck clean, and the make targets resolve to the intended commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

DEPS_PKGS = ("busybox-static", "shellcheck", "vagrant", "docker.io")


def _shell_scripts() -> list[Path]:
    scripts = [REPO / "vagrant" / "provision.sh", REPO / ".ci" / "run"]
    scripts += sorted((REPO / "demo").glob("*.sh"))
    return scripts


SCRIPTS = _shell_scripts()
SCRIPT_IDS = [str(p.relative_to(REPO)) for p in SCRIPTS]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (`make deps` installs it)")
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus what an outer `make test` passes down."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(extra)
    return env


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env if env is not None else _clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _offline_prefix() -> list[str]:
    """`unshare --net` when this process may use it: proves a command needs no network."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return []
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True)
    return [unshare, "--net"] if probe.returncode == 0 else []


def _vagrant_validate(vagrant_dir: Path, tmp_path: Path):
    vagrant = _need("vagrant")
    env = _clean_env(
        # A fresh home: no boxes, plugins or state of the user's are looked at,
        # and nothing is written to ~/.vagrant.d.
        VAGRANT_HOME=str(tmp_path / "vagrant-home"),
        # Keeps the machine's .vagrant/ state dir out of the repo.
        VAGRANT_DOTFILE_PATH=str(tmp_path / "vagrant-dot"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_BOX_UPDATE_CHECK_DISABLE="1",
        VAGRANT_NO_PLUGINS="1",
    )
    # --ignore-provider: neither libvirt nor virtualbox is installed here, and
    # without it validate fails with "No usable default provider".
    cmd = _offline_prefix() + [vagrant, "validate", "--ignore-provider", "--no-tty", "--no-color"]
    return _run(cmd, cwd=vagrant_dir, env=env)


# --- Vagrant ---------------------------------------------------------------


def test_vagrant_validate(tmp_path):
    res = _vagrant_validate(REPO / "vagrant", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout


def test_vagrant_validate_catches_errors(tmp_path):
    """The check above is meaningful: a broken Vagrantfile does not validate."""
    broken = tmp_path / "vagrant"
    shutil.copytree(REPO / "vagrant", broken, ignore=shutil.ignore_patterns(".vagrant"))
    vf = broken / "Vagrantfile"
    vf.write_text(vf.read_text().replace('path: "provision.sh"', 'path: "no-such-script.sh"'))
    res = _vagrant_validate(broken, tmp_path)
    assert res.returncode != 0
    assert "no-such-script.sh" in res.stdout + res.stderr


def test_vagrantfile_settings():
    text = (REPO / "vagrant" / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert '"/vagrant"' in text
    assert re.search(r'provision\s+"shell",\s*path:\s*"provision\.sh"', text)
    for provider in ("libvirt", "virtualbox"):
        block = re.search(rf'provider\s+"{provider}"\s+do\s+\|(\w+)\|(.*?)\n\s*end', text, re.S)
        assert block, f"no {provider} provider block"
        var, body = block.group(1), block.group(2)
        mem = re.search(rf"{var}\.memory\s*=\s*(\d+)", body)
        cpus = re.search(rf"{var}\.cpus\s*=\s*(\d+)", body)
        assert mem and int(mem.group(1)) >= 4096, f"{provider}: memory"
        assert cpus and int(cpus.group(1)) >= 2, f"{provider}: cpus"


def test_provision_runs_make_test():
    text = (REPO / "vagrant" / "provision.sh").read_text()
    assert "set -euo pipefail" in text
    assert "cd /vagrant" in text
    assert re.search(r"^\s*make test\b", text, re.M)


# --- shell scripts ---------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=SCRIPT_IDS)
def test_script_parses(script):
    res = _run(["bash", "-n", str(script)], cwd=REPO)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=SCRIPT_IDS)
def test_script_shellcheck_clean(script):
    shellcheck = _need("shellcheck")
    res = _run([shellcheck, str(script)], cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ci_run_uses_make_test():
    text = (REPO / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text
    assert re.search(r"\bmake test\b", text)


# --- Makefile --------------------------------------------------------------


def test_make_dry_run_resolves_targets():
    _need("make")
    res = _run(["make", "-n", "test", "demo", "bench"], cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert ".venv/bin/python -m pytest -q" in out
    assert "bash demo/demo.sh" in out
    assert ".venv/bin/python -m bench" in out


def test_make_from_fresh_clone_builds_venv(tmp_path):
    """Without a .venv (as after `git clone`), `make test` creates and fills it first."""
    _need("make")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    res = _run(["make", "-n", "test"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    venv = out.find("-m venv .venv")
    install = out.find("pip install")
    pytest_run = out.find("-m pytest")
    assert -1 < venv < install < pytest_run, out
    assert "'.[test]'" in out


def test_make_venv_is_up_to_date_after_install():
    """The stamp works: once installed, `make .venv` has nothing to do."""
    _need("make")
    if not (REPO / ".venv" / ".installed").exists():
        pytest.skip("the venv was not made by `make .venv` (no .venv/.installed stamp)")
    res = _run(["make", "-q", ".venv"], cwd=REPO)
    assert res.returncode == 0, "make .venv would rebuild: " + res.stdout + res.stderr


def test_make_deps_quiet_when_installed():
    _need("make")
    _need("dpkg-query")
    for pkg in DEPS_PKGS:
        status = _run(["dpkg-query", "-W", "-f=${Status}", pkg], cwd=REPO).stdout
        if not status.endswith(" ok installed"):
            pytest.skip(f"{pkg} is not installed: `make deps` would install it")
    res = _run(["make", "-s", "deps"], cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == "" and res.stderr == ""


# --- README and .gitignore -------------------------------------------------


def test_readme_quick_start_comes_first():
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:30])
    assert "make demo" in head
    assert "make test" in head


def test_gitignore_has_venv():
    entries = {line.strip().strip("/") for line in (REPO / ".gitignore").read_text().splitlines()}
    assert ".venv" in entries
