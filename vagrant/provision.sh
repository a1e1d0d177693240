#!/usr/bin/env bash
# Provisioner of vagrant/Vagrantfile: runs as root in the Debian 12 VM, with
# the repo synced to /vagrant. Installs what `make` itself needs, then the same
# steps as `make test` on any fresh Debian 12 machine.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    make python3 python3-venv git ca-certificates

cd /vagrant
make test
