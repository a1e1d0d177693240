"""Every path under the store root and the run root, in one place.

::

    <root>/layers/<chain-hex>/diff/        the layer's files, overlay form
    <root>/layers/<chain-hex>/layer.json   parent, diff_id, size, created, comment, link
    <root>/layers/<chain-hex>/tar-split.gz what regenerates the original tar (layers from a tar)
    <root>/l/<short> -> ../layers/<chain-hex>/diff   (or ../containers/<id>/init)
    <root>/images/<image-hex>.json         image config (its sha256 is the image ID)
    <root>/tags.json                       {"name:tag": "sha256:..."}
    <root>/containers/<id>/container.json  name, image, created, options
    <root>/containers/<id>/{init,upper,work,merged}/
    <root>/names/<name> -> ../containers/<id>   a container's name, unique by construction
    <root>/staging/<pid>-<random>/         half-built objects; swept when their pid is gone
    <root>/trash/<pid>-<random>/           removed objects, deleted once nothing below is mounted
    <root>/journal.json                    how to finish an interrupted transaction
    <root>/store.json                      format version and the backing filesystem probe
    <root>/tags.json.damaged-<time>        a damaged tags.json that check --repair moved aside
    <root>/lock                            flock for mutations
    <root>/containers/<id>/state.json      run state (created, running, exited, exit code)
    <root>/containers/<id>/container.log   output of a detached container
    <root>/network.json                    bridge name, subnet, addresses handed out
    <root>/idranges.json                   host ID ranges handed to user-namespaced containers
    <run-root>/ns/<container-id>           pinned mount namespace
    <run-root>/netns/<container-id>        pinned network namespace of a running container
    <run-root>/empty/                      empty bottom layer for one-lower read-only unions
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ROOT = "/var/lib/overlayctl"
DEFAULT_RUN_ROOT = "/run/overlayctl"
TAR_SPLIT = "tar-split.gz"  # in a layer's directory, next to diff/


def hex_of(digest: str) -> str:
    return digest[7:] if digest.startswith("sha256:") else digest


@dataclass(frozen=True, slots=True)
class StoreLayout:
    root: str
    run_root: str

    @classmethod
    def at(cls, root: str | None = None, run_root: str | None = None) -> StoreLayout:
        root = root or os.environ.get("OVERLAYCTL_ROOT") or DEFAULT_ROOT
        run_root = run_root or os.environ.get("OVERLAYCTL_RUN_ROOT") or DEFAULT_RUN_ROOT
        return cls(os.path.abspath(root), os.path.abspath(run_root))

    # layers
    @property
    def layers(self) -> str:
        return f"{self.root}/layers"

    def layer_dir(self, layer_id: str) -> str:
        return f"{self.root}/layers/{hex_of(layer_id)}"

    def diff(self, layer_id: str) -> str:
        return f"{self.root}/layers/{hex_of(layer_id)}/diff"

    def diffs(self, layer_ids) -> list[str]:
        """diff() of many layers at once (the hot path of planning a mount)."""
        root = self.root
        return [f"{root}/layers/{hex_of(i)}/diff" for i in layer_ids]

    def layer_json(self, layer_id: str) -> str:
        return f"{self.root}/layers/{hex_of(layer_id)}/layer.json"

    def tar_split(self, layer_id: str) -> str:
        """What regenerates the tar a layer was imported from (archive.tarsplit); absent otherwise."""
        return f"{self.root}/layers/{hex_of(layer_id)}/{TAR_SPLIT}"

    @property
    def links(self) -> str:
        return f"{self.root}/l"

    def link(self, short: str) -> str:
        return f"{self.root}/l/{short}"

    # images and tags
    @property
    def images(self) -> str:
        return f"{self.root}/images"

    def image_json(self, image_id: str) -> str:
        return f"{self.root}/images/{hex_of(image_id)}.json"

    @property
    def tags(self) -> str:
        return f"{self.root}/tags.json"

    # containers
    @property
    def containers(self) -> str:
        return f"{self.root}/containers"

    def container_dir(self, container_id: str) -> str:
        return f"{self.root}/containers/{container_id}"

    @property
    def names(self) -> str:
        return f"{self.root}/names"

    def name_link(self, name: str) -> str:
        return f"{self.root}/names/{name}"

    def container_json(self, container_id: str) -> str:
        return f"{self.root}/containers/{container_id}/container.json"

    def state_json(self, container_id: str) -> str:
        """Run state: created/running/exited, pids, exit code, OOM (the monitor writes it)."""
        return f"{self.root}/containers/{container_id}/state.json"

    def log(self, container_id: str) -> str:
        """Output of a detached container."""
        return f"{self.root}/containers/{container_id}/container.log"

    def init(self, container_id: str) -> str:
        return f"{self.root}/containers/{container_id}/init"

    def bundle(self, container_id: str) -> str:
        """The OCI bundle: config.json, whose root is ``merged``."""
        return f"{self.root}/containers/{container_id}/bundle"

    def upper(self, container_id: str) -> str:
        return f"{self.root}/containers/{container_id}/upper"

    def work(self, container_id: str) -> str:
        return f"{self.root}/containers/{container_id}/work"

    def merged(self, container_id: str) -> str:
        return f"{self.root}/containers/{container_id}/merged"

    @property
    def blob_cache(self) -> str:
        """Blobs of pulls: verified ones (kept for a resume, or with --keep-blobs) and partial ones."""
        return f"{self.root}/cache/blobs"

    # housekeeping
    @property
    def staging(self) -> str:
        return f"{self.root}/staging"

    @property
    def trash(self) -> str:
        return f"{self.root}/trash"

    @property
    def journal(self) -> str:
        """The journal of the transaction in progress (or interrupted)."""
        return f"{self.root}/journal.json"

    @property
    def lock(self) -> str:
        return f"{self.root}/lock"

    @property
    def store_json(self) -> str:
        return f"{self.root}/store.json"

    @property
    def network_json(self) -> str:
        """Bridge name, subnet and the addresses handed out."""
        return f"{self.root}/network.json"

    @property
    def idranges_json(self) -> str:
        """The host ID ranges handed to containers run in a user namespace (store.idranges)."""
        return f"{self.root}/idranges.json"

    # run root
    @property
    def ns_dir(self) -> str:
        return f"{self.run_root}/ns"

    def pin(self, container_id: str) -> str:
        return f"{self.run_root}/ns/{container_id}"

    @property
    def netns_dir(self) -> str:
        return f"{self.run_root}/netns"

    def netns_pin(self, container_id: str) -> str:
        """Pinned network namespace of a running container (like ip netns)."""
        return f"{self.run_root}/netns/{container_id}"

    @property
    def runtime_state(self) -> str:
        """The OCI runtime's own state directory (its --root)."""
        return f"{self.run_root}/runtime"

    def monitor_dir(self, container_id: str) -> str:
        """What conmon writes while a container runs: PID files, the exit file, the runtime's log."""
        return f"{self.run_root}/monitor/{container_id}"

    @property
    def empty(self) -> str:
        return f"{self.run_root}/empty"
