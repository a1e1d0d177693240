# overlayctl — build, test and demo entry points.
#
# On a fresh Debian 12 machine, as root:   make test    /   make demo
# Everything the targets need (apt packages, the virtualenv) is installed on
# first use; later runs only check and are quiet.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
# Targets share apt and the venv: never run their recipes concurrently.
.NOTPARALLEL:

PYTHON3     ?= python3
VENV        := .venv
VENV_PY     := $(VENV)/bin/python
VENV_STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS  ?=

# Debian packages the test suite, the demo and the lint target need.
APT_PKGS    := busybox-static shellcheck vagrant docker.io iproute2 util-linux tar strace e2fsprogs podman skopeo runc crun conmon tini docker-compose
# Registries for the pull/push tests (tests/registry): htpasswd -B makes their bcrypt
# password files, openssl their certificates and token keys.
APT_PKGS    += apache2-utils openssl
# Installed with services forbidden (ensure_pkgs_nostart): docker-registry's postinst
# would start a registry listening on all interfaces; the tests start their own.
NOSTART_PKGS := docker-registry
# Needed only to create the virtualenv.
VENV_PKGS   := python3 python3-venv

# $(call missing_pkgs,PKG...): sets the shell array "missing" to the packages of the list not installed.
define missing_pkgs
missing=(); \
for p in $(1); do \
  st=$$(dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null || true); \
  [[ $$st == *' ok installed' ]] || missing+=("$$p"); \
done
endef

# $(call ensure_pkgs,PKG...): install the Debian packages of the list that are
# not installed yet. Silent, and no apt-get update, when none is missing.
# The lock timeout makes apt wait for another apt/dpkg run instead of failing.
define ensure_pkgs
$(call missing_pkgs,$(1)); \
if (( $${#missing[@]} )); then \
  echo "deps: installing $${missing[*]}"; \
  sudo=(); \
  if [[ $$(id -u) -ne 0 ]]; then \
    command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install $${missing[*]}" >&2; exit 1; }; \
    sudo=(sudo); \
  fi; \
  apt=("$${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=1200); \
  "$${apt[@]}" -qq update; \
  "$${apt[@]}" -qq install -y --no-install-recommends "$${missing[@]}"; \
fi
endef

# $(call ensure_pkgs_nostart,PKG...): ensure_pkgs, with no service of theirs
# started, then or at boot.  While apt runs, /usr/sbin/policy-rc.d is one that
# exits 101 ("action forbidden", invoke-rc.d(8); deb-systemd-invoke honours it
# too); the one that was there is put back after, also when the install fails or
# is interrupted, and at the start of the next run after a SIGKILL (a lock keeps
# two runs from swapping it at once).  Then their units and init scripts are
# disabled, as the postinst enables both for the next boot (systemctl disable
# works without a running systemd; deb-systemd-helper refuses outside dpkg).
define ensure_pkgs_nostart
rc=/usr/sbin/policy-rc.d; saved=/usr/sbin/policy-rc.d.overlayctl-saved; \
sudo=(); [[ $$(id -u) -eq 0 ]] || sudo=(sudo); \
exec 9>>/run/lock/overlayctl-policy-rc.lock; flock -w 1200 9; \
if [[ -e $$saved ]]; then \
  echo "deps: putting back $$rc, saved by an install that was killed"; \
  "$${sudo[@]}" mv -f "$$saved" "$$rc"; \
fi; \
$(call missing_pkgs,$(1)); \
if (( $${#missing[@]} )); then \
  if (( $${#sudo[@]} )) && ! command -v sudo >/dev/null; then \
    echo "deps: need root (or sudo) to install $${missing[*]}" >&2; exit 1; \
  fi; \
  restore() { \
    if [[ -e $$saved ]]; then "$${sudo[@]}" mv -f "$$saved" "$$rc"; else "$${sudo[@]}" rm -f "$$rc"; fi; \
  }; \
  if [[ -e $$rc ]]; then "$${sudo[@]}" cp -p "$$rc" "$$saved"; fi; \
  trap restore EXIT; trap 'exit 130' INT TERM HUP; \
  printf '#!/bin/sh\n# overlayctl make deps: no service starts while it installs %s\nexit 101\n' "$${missing[*]}" \
    | "$${sudo[@]}" tee "$$rc.new" >/dev/null; \
  "$${sudo[@]}" chmod 755 "$$rc.new"; \
  "$${sudo[@]}" mv -f "$$rc.new" "$$rc"; \
  ( $(call ensure_pkgs,$(1)) ); \
  for p in "$${missing[@]}"; do \
    if [[ -e /lib/systemd/system/$$p.service ]] && command -v systemctl >/dev/null; then \
      "$${sudo[@]}" systemctl --quiet disable "$$p.service"; \
    fi; \
    if [[ -e /etc/init.d/$$p ]]; then "$${sudo[@]}" update-rc.d "$$p" disable >/dev/null 2>&1; fi; \
  done; \
fi
endef

.PHONY: deps test demo bench lint clean

deps:
	@$(call ensure_pkgs,$(APT_PKGS))
	@$(call ensure_pkgs_nostart,$(NOSTART_PKGS))

# The venv itself: created when missing (or broken), then the package and its
# test extra installed; the stamp re-runs the install when pyproject.toml changes.
$(VENV_PY):
	@$(call ensure_pkgs,$(VENV_PKGS))
	$(PYTHON3) -m venv $(VENV)

# editable_mode=compat: a plain path in a .pth file, no import hook on every
# start-up of the CLI (~8 ms).
$(VENV_STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	@touch $@

$(VENV): $(VENV_STAMP)
	@touch $@

test: deps $(VENV)
	$(VENV_PY) -m pytest -q $(PYTEST_ARGS)

demo: deps $(VENV)
	bash demo/demo.sh

# The benchmarks (as root; never fails on slow numbers). Pick families and
# repetitions with BENCH_ARGS, e.g. make bench BENCH_ARGS='--only api,help --reps 5'
# (--only FAMILY[,FAMILY], --reps N; python -m bench --help lists the families).
bench: deps $(VENV)
	$(VENV_PY) -m bench $(BENCH_ARGS)

# shellcheck every shell script of the repo (demo/*.sh only when present).
lint:
	@$(call ensure_pkgs,shellcheck)
	shellcheck vagrant/provision.sh .ci/run $(wildcard demo/*.sh)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
