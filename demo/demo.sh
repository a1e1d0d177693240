#!/usr/bin/env bash
# overlayctl demo: a busybox image, copy-on-write containers, commit and rollback,
# all on the real kernel, in a throw-away store under a temp dir.
#
# Run as root from anywhere (make demo).  OVERLAYCTL= overrides the CLI path,
# PYTHON= the Python used to read JSON and xattrs (default: the venv's).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OVERLAYCTL=${OVERLAYCTL:-$repo/.venv/bin/overlayctl}
PYTHON=${PYTHON:-$repo/.venv/bin/python}
[[ $OVERLAYCTL == */* ]] && OVERLAYCTL=$(realpath "$OVERLAYCTL")
[[ $PYTHON == */* ]] && PYTHON=$(realpath "$PYTHON")

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: overlay mounts need root; run it as root (sudo make demo)" >&2
  exit 1
fi
BUSYBOX=$(command -v busybox) || {
  echo "demo: no busybox on this host; install busybox-static (make deps)" >&2
  exit 1
}

tmp=$(mktemp -d /tmp/overlayctl-demo.XXXXXX)
ROOT=$tmp/store
RUN=$tmp/run
ROOTFS=$tmp/rootfs
CONTAINERS=(one two three)

# Everything this script made lives under $tmp: remove the containers (that
# unmounts them and drops their namespace pins), unmount whatever is still
# mounted under $tmp (the pin directory overlayctl bind-mounts onto itself),
# then delete the temp dir without crossing into another filesystem.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  cd /
  if [[ -d $ROOT/containers ]]; then
    for name in "${CONTAINERS[@]}"; do
      "$OVERLAYCTL" --root "$ROOT" --run-root "$RUN" container rm -f "$name" >/dev/null 2>&1
    done
  fi
  local point
  while read -r point; do
    umount -l "$point"
  done < <(awk -v base="$tmp" 'index($5, base "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
  rm -rf --one-file-system "$tmp"
  if ((status != 0)); then
    echo "demo: FAILED (exit $status); cleaned up $tmp" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- printing helpers -------------------------------------------------------

section() { printf '\n== %s ==\n' "$*"; }
note() { printf '# %s\n' "$*"; }

# Print $tmp as $TMP, in the commands shown and in their output.
abbrev() { sed -u "s|$tmp|\$TMP|g"; }
# Show a command as a shell would take it (words with spaces or quotes in '').
show() {
  local word words=()
  for word in "$@"; do
    if [[ $word =~ ^[][A-Za-z0-9_./:=+@%,^-]+$ ]]; then
      words+=("$word")
    else
      words+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  printf '$ %s\n' "${words[*]}" | abbrev
}
run() {
  show "$@"
  "$@" | abbrev
}
# cd, shown.
go() {
  show cd "$1"
  cd "$1"
}
# overlayctl on the demo store, shown without the --root/--run-root flags.
oc() {
  show overlayctl "$@"
  "$OVERLAYCTL" --root "$ROOT" --run-root "$RUN" "$@" | abbrev
}
# Same, quietly (for values the demo needs, e.g. a path from --json).
ocq() { "$OVERLAYCTL" --root "$ROOT" --run-root "$RUN" "$@"; }
# Read a key path (a.b.0) from JSON on stdin.
json() {
  "$PYTHON" -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value)' "$1"
}

start=$SECONDS
echo "overlayctl demo on Linux $(uname -r)"
echo "overlayctl = $OVERLAYCTL --root \$TMP/store --run-root \$TMP/run"
echo "TMP = $tmp (removed at the end)"

# --- 1 ----------------------------------------------------------------------
section "1. base image from the host's busybox"
mkdir -p "$ROOTFS"/{bin,etc,data,opt/app,tmp,root}
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
applets=0
while read -r applet; do
  [[ $applet == busybox ]] && continue
  ln -s busybox "$ROOTFS/bin/$applet"
  applets=$((applets + 1))
done < <("$BUSYBOX" --list)
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"
echo "Welcome to the busybox base image." >"$ROOTFS/etc/motd"
echo "this file will be deleted" >"$ROOTFS/data/old.txt"
echo "this file stays" >"$ROOTFS/data/keep.txt"
echo "app v1" >"$ROOTFS/opt/app/version"
printf '#!/bin/sh\necho hello from app v1\n' >"$ROOTFS/opt/app/run.sh"
chmod 755 "$ROOTFS/opt/app/run.sh"
chmod 1777 "$ROOTFS/tmp"
note "rootfs: bin/busybox copied from $BUSYBOX, $applets applet links made with 'busybox --list',"
note "etc/passwd, etc/group, etc/motd, data/ and opt/app/"
go "$ROOTFS"
run ls -l bin/busybox bin/sh bin/ls
run find . -path ./bin -prune -o -type f -print
go "$tmp"
oc image import rootfs --tag busybox:base -m "busybox rootfs"
oc image ls

# --- 2 ----------------------------------------------------------------------
section "2. two containers share the image's layers"
oc container create busybox:base --name one
oc container create busybox:base --name two
oc container ls
ONE=$(ocq container inspect one --json | json id)
TWO=$(ocq container inspect two --json | json id)
note "the image's layer is on disk once; each container costs only its init layer and empty dirs:"
go "$ROOT"
run du -sh layers "containers/$ONE" "containers/$TWO"

# --- 3 ----------------------------------------------------------------------
section "3. mount 'one' in its own mount namespace and change it"
show overlayctl container mount one
MERGED=$(ocq container mount one)
echo "$MERGED" | abbrev
go "$ROOT/containers/$ONE"
note "the host's mount namespace does not see the mount: merged/ is an empty directory here"
run mountpoint merged || true
run ls -A merged
note "'container enter' joins the container's namespace, with merged/ as the working directory"
note "(the host's root stays /: it is not a chroot, so the paths below are relative)"
oc container enter one -- sh -c 'mountpoint .; ls; cat etc/motd'
note "change things: append to a lower file, add a file, delete a file, replace a directory"
oc container enter one -- sh -c '
  echo "a line added in container one" >> etc/motd
  echo "created in one" > data/new.txt
  rm data/old.txt
  rm -rf opt/app && mkdir opt/app && echo new > opt/app/new.txt
  ls data opt/app'
note "the image's own busybox runs too (bin/sh, relative to merged/):"
oc container enter one -- bin/sh -c 'bin/busybox --help 2>&1 | bin/head -n 1; bin/cat etc/motd'

# --- 4 ----------------------------------------------------------------------
section "4. the image layer is untouched; the changes live in the upper"
LAYER=$(ocq image inspect busybox:base --json | json layers.0)
DIFF=$(ocq layer inspect "$LAYER" --json | json diff)
show overlayctl image inspect busybox:base --json
note "  layers[0] = $LAYER"
show overlayctl layer inspect "${LAYER:7:12}" --json
note "  diff = ${DIFF//$tmp/\$TMP}"
go "$DIFF"
run cat etc/motd
run ls data opt/app
note "container one's upper holds only what changed:"
go "$ROOT/containers/$ONE/upper"
run ls -la etc data opt/app
note "data/old.txt is a whiteout (a character device 0/0), opt/app an opaque directory:"
run stat -c '%n: %F %t:%T' data/old.txt
getxattr='import os; print("trusted.overlay.opaque =", os.getxattr("opt/app", "trusted.overlay.opaque"))'
show python -c "$getxattr"
"$PYTHON" -c "$getxattr"
oc container diff one

# --- 5 ----------------------------------------------------------------------
section "5. commit the container as a new image"
oc container commit one busybox:v2 -m "motd, new files"
oc image tree
oc image history busybox:v2

# --- 6 ----------------------------------------------------------------------
section "6. a container from v2, and rollback: 'two' still runs the base image"
oc container create busybox:v2 --name three
oc container mount three
oc container enter three -- cat etc/motd
oc container enter three -- ls data opt/app
note "'two' was created from busybox:base: the original files"
oc container mount two
oc container enter two -- cat etc/motd
oc container enter two -- ls data opt/app

# --- 7 ----------------------------------------------------------------------
section "7. the live mount, decoded and mapped back to the store"
note "read from the container's namespace; the kernel lists only options that differ from"
note "its defaults, so index=off and metacopy=off of the plan do not show here"
oc mounts --container one
oc container inspect one

# --- 8 ----------------------------------------------------------------------
section "8. run containers: an OCI runtime on the overlay, contained as Docker does it"
oc container unmount three
oc run --rm busybox:v2 -- cat /etc/motd
note "PID 1 is the command itself, as in Docker; only the container's processes are visible"
oc run --rm --hostname demo busybox:v2 -- sh -c 'hostname; ps'
note "--network none: a network namespace with only loopback, up"
oc run --rm busybox:v2 -- ip -o link
note "Docker's default profile: 14 capabilities, a seccomp filter; the runtime (runc or crun) applies it"
oc run --rm busybox:v2 -- grep -E '^(CapEff|Seccomp):' /proc/self/status
oc run --rm busybox:v2 -- sh -c 'unshare -m true || echo "unshare refused"; cat /proc/kcore 2>/dev/null | head -c1 | wc -c'
note "the profile is decided in one place, the container's OCI config (container spec NAME prints it)"
oc info | grep -A2 'OCI runtime'
note "the command's exit code is overlayctl's"
set +e
oc run --rm busybox:v2 -- sh -c 'exit 42'
code=$?
set -e
echo "exit code: $code"
note "a memory limit through cgroups: the hog is killed, and inspect says why"
set +e
oc run --name hog --memory 16m busybox:v2 -- sh -c 'head -c 100000000 /dev/zero | tr "\\0" a | sort >/dev/null'
set -e
oc ps -a
oc rm hog

# --- 9 ----------------------------------------------------------------------
section "9. trade images with Docker: image save into docker load, docker save into image load"
"$PYTHON" "$repo/demo/docker_trade.py" "$OVERLAYCTL" "$ROOT" "$RUN" "$tmp" busybox:v2

# --- 10 ---------------------------------------------------------------------
section "10. cleanup"
cd /
oc container rm -f one two three
oc image ls
left=$(awk -v base="$tmp" 'index($5, base "/") == 1 && $5 != base "/run/ns"' /proc/self/mountinfo)
if [[ -n $left ]]; then
  echo "demo: mounts left behind:" >&2
  echo "$left" >&2
  exit 1
fi
note "no overlay mount or namespace pin left; the trap removes \$TMP ($((SECONDS - start)) s)"
echo "demo: OK"
