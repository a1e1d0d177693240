"""Deterministic races: a competing ``image rm`` run at a chosen point inside another verb.

A hook wraps a module-level function of ``overlayctl.store`` (monkeypatch):
when the verb under test reaches it, the hook starts ``image rm`` through a
second LayerStore on the same root, in another thread, and waits for it up
to HOOK_WAIT seconds.  If the verb holds the store lock there, the rm blocks
and the verb goes on; otherwise the rm runs to its end inside the verb's
window.  Either way the outcome must be consistent:

* import vs image rm of the only other image using the same layer, between
  the layer's deduplication and the image's publication: the new image has
  all its layers (or the import failed cleanly and left nothing), and check
  is clean;
* container create vs image rm of its image: the container never ends up on
  a missing image (or missing layers), and check is clean.

A deadlock fails after DEADLOCK_TIMEOUT seconds instead of hanging.  The hook
points are tried in order; a test whose hook point no longer exists (or is no
longer called through its module) fails and says so: update HOOKS.
"""

from __future__ import annotations

import importlib
import os
import threading

import pytest

from overlayctl.errors import OverlayctlError

from ._stress import assert_clean, stress  # noqa: F401

pytestmark = pytest.mark.root

HOOK_WAIT = 1.0  # the competitor still running after this long is blocked (on the store lock)
DEADLOCK_TIMEOUT = 20.0  # shorter than the store's lock timeout, so a deadlock is seen as one

# name -> (candidate "module:function" hook points, run the competitor "before" or "after" the call)
HOOKS = {
    # The import found its layer already stored (dedup) and has not published its image yet.
    "after-layer-dedup": (["overlayctl.store.layers:publish_layer"], "after"),
    # The image record is about to be written.
    "before-image-publish": (["overlayctl.store.images:save_image"], "before"),
    # container create has read its image's record, and made nothing yet.
    "after-image-read": (["overlayctl.store.images:load_image"], "after"),
    # The container's directories and record are about to be made.
    "before-container-publish": (["overlayctl.store.containers:create_container"], "before"),
}


class Competitor:
    """A function run in another thread: started by the hook, finished by the test."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.thread: threading.Thread | None = None
        self.result = None
        self.error: BaseException | None = None
        self.blocked = False  # still running HOOK_WAIT seconds after it started

    def _run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="competitor", daemon=True)
        self.thread.start()
        self.thread.join(HOOK_WAIT)
        self.blocked = self.thread.is_alive()

    def finish(self) -> None:
        assert self.thread is not None, "the hook never fired: the hook point is not on the verb's path any more"
        self.thread.join(DEADLOCK_TIMEOUT)
        assert not self.thread.is_alive(), f"deadlock: the competing image rm still runs after {DEADLOCK_TIMEOUT}s"
        if self.error is not None and not isinstance(self.error, OverlayctlError):
            raise self.error


def install_hook(monkeypatch, hook: str, fire) -> str:
    """Wrap the first existing hook point so that its first call in this thread fires; its name."""
    candidates, when = HOOKS[hook]
    me = threading.current_thread()
    for candidate in candidates:
        module_name, name = candidate.split(":")
        module = importlib.import_module(module_name)
        original = getattr(module, name, None)
        if original is None:
            continue
        fired = []

        def wrapper(*args, _original=original, _fired=fired, **kwargs):
            ours = threading.current_thread() is me and not _fired
            if ours:
                _fired.append(True)
                if when == "before":
                    fire()
            result = _original(*args, **kwargs)
            if ours and when == "after":
                fire()
            return result

        monkeypatch.setattr(module, name, wrapper)
        return candidate
    pytest.fail(f"none of the hook points {candidates} exists any more: update HOOKS in test_races.py")


def layers_present(store, image_id: str) -> list[str]:
    """The layers of an image that are missing from the store (diff/ or layer.json)."""
    image = store.images.get(image_id)
    return [
        layer
        for layer in image.layers
        if not (os.path.isdir(store.layout.diff(layer)) and os.path.isfile(store.layout.layer_json(layer)))
    ]


@pytest.mark.parametrize("hook", ["after-layer-dedup", "before-image-publish"])
def test_import_against_image_rm_of_the_layers_other_user(hook, stress, rootfs, monkeypatch):  # noqa: F811
    from overlayctl import LayerStore

    store = LayerStore(stress.root, stress.run_root)
    other = LayerStore(stress.root, stress.run_root)  # its own lock file descriptor: a second process, in effect
    first = store.images.import_rootfs(str(rootfs), tag="a")
    competitor = Competitor(lambda: other.images.remove("a"))
    where = install_hook(monkeypatch, hook, competitor.start)

    imported, failure = None, None
    try:
        imported = store.images.import_rootfs(str(rootfs), tag="b")  # the same content: the layer is deduplicated
    except OverlayctlError as exc:
        failure = exc
    competitor.finish()
    monkeypatch.undo()

    state = "blocked until the import finished" if competitor.blocked else "ran inside the import's window"
    context = f"image rm of 'a' at {where} ({hook}) {state}; rm -> {competitor.error or competitor.result}: "
    fresh = LayerStore(stress.root, stress.run_root)
    if competitor.blocked:
        assert failure is None, context + f"the import held the store, yet failed: {failure.format()}"
    if failure is None:
        assert imported.layers == first.layers, context + "the layer was not deduplicated"
        missing = layers_present(fresh, imported.id)
        assert not missing, context + f"the new image b lists layers that are gone: {missing}"
        assert fresh.images.tags().get("b:latest") == imported.id, context + "tag b is lost"
    else:
        assert "b:latest" not in fresh.images.tags(), context + f"the import failed ({failure.format()}) and left tag b"
    assert_clean(stress.cli, context)


@pytest.mark.parametrize("hook", ["after-image-read", "before-container-publish"])
def test_container_create_against_image_rm_of_its_image(hook, stress, rootfs, monkeypatch):  # noqa: F811
    from overlayctl import LayerStore

    store = LayerStore(stress.root, stress.run_root)
    other = LayerStore(stress.root, stress.run_root)
    store.images.import_rootfs(str(rootfs), tag="a")
    competitor = Competitor(lambda: other.images.remove("a"))
    where = install_hook(monkeypatch, hook, competitor.start)

    created, failure = None, None
    try:
        created = store.containers.create("a", name="c")
    except OverlayctlError as exc:
        failure = exc
    competitor.finish()
    monkeypatch.undo()

    state = "blocked until the create finished" if competitor.blocked else "ran inside the create's window"
    context = f"image rm of 'a' at {where} ({hook}) {state}; rm -> {competitor.error or competitor.result}: "
    fresh = LayerStore(stress.root, stress.run_root)
    names = [c.record.name for c in fresh.containers.list()]
    if competitor.blocked:
        assert failure is None, context + f"the create held the store, yet failed: {failure.format()}"
    if failure is None:
        assert names == ["c"], context + f"containers: {names}"
        image_id = fresh.containers.get("c").record.image
        assert image_id == created.image
        assert os.path.isfile(fresh.layout.image_json(image_id)), context + "container c is on a missing image"
        missing = layers_present(fresh, image_id)
        assert not missing, context + f"container c's image lists layers that are gone: {missing}"
        assert competitor.error is not None, context + "image rm removed the image of a container"
    else:
        assert names == [], context + f"the create failed ({failure.format()}) and left containers {names}"
    assert_clean(stress.cli, context)
