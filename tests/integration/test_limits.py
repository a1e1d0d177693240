"""Deep stacks: 128, 129 and 500 lower layers mount; 501 is refused clearly."""

from __future__ import annotations

import os

import pytest

from overlayctl.errors import TooManyLayers
from overlayctl.kernel.mount import MountApi

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A store with one chain of 500 layers (shared by the tests of this module)."""
    from overlayctl import LayerStore

    from ..conftest import _cleanup_store

    base = tmp_path_factory.mktemp("deep")
    store = LayerStore(root=str(base / "root"), run_root=str(base / "run"))
    src = base / "src"
    src.mkdir()
    parent = None
    chain = []
    for i in range(500):
        (src / "f").write_text(f"layer {i}\n")
        (src / f"only-{i}").write_text("x")
        parent = store.layers.create(str(src), parent=parent).id
        os.unlink(src / f"only-{i}")
        chain.append(parent)
    try:
        yield store, chain
    finally:
        _cleanup_store(store)


@pytest.mark.parametrize("lowers", [128, 129, 500], ids=lambda n: f"{n}-lowers")
@pytest.mark.parametrize("api", [MountApi.NEW, MountApi.CLASSIC], ids=["new-api", "classic"])
def test_deep_container_mounts(deep, lowers, api):
    store, chain = deep
    # A container adds its init layer: an image of lowers-1 layers makes `lowers` lowers.
    image = store.images.create(chain[lowers - 2], tag=f"deep:{lowers}")
    name = f"c{lowers}-{api.value}"
    ctr = store.containers.create(image.id, name=name)
    if api is MountApi.CLASSIC and lowers == 500:
        # 500 short links do not fit in mount(2)'s one page: refused, never cut.
        with pytest.raises(TooManyLayers, match="mount\\(2\\) takes at most 4095"):
            store.containers.mount(name, host=True, api=api)
        assert store.containers.get(name).mounted is None
        store.containers.remove(name)
        return
    store.containers.mount(name, host=True, api=api)
    try:
        merged = store.layout.merged(ctr.id)
        assert open(f"{merged}/f").read() == f"layer {lowers - 2}\n"  # the top layer wins
        # Every layer of the stack shows through: each added one file.
        assert len([n for n in os.listdir(merged) if n.startswith("only-")]) == lowers - 1
        report = [m for m in store.mounts.list() if m.target == merged][0]
        assert len(report.lowers) == lowers
    finally:
        store.containers.remove(name, force=True)


def test_501_lowers_is_refused_clearly(deep):
    store, chain = deep
    image = store.images.create(chain[499], tag="deep:500")
    assert len(image.layers) == 500
    with pytest.raises(TooManyLayers, match="501 lower layers: the kernel stacks at most 500"):
        store.containers.create("deep:500", name="too-deep")
    assert store.containers.list() == []


def test_union_of_500_and_501_plain_directories(store, tmp_path):
    dirs = []
    for i in range(501):
        d = tmp_path / "dirs" / str(i)
        d.mkdir(parents=True)
        (d / f"f{i}").write_text("x")
        dirs.append(str(d))
    target = tmp_path / "union"
    target.mkdir()
    store.mounts.union(dirs[:500], str(target))
    try:
        assert len(os.listdir(target)) == 500
    finally:
        store.mounts.unmount_union(str(target))
    with pytest.raises(TooManyLayers, match="501 lower layers"):
        store.mounts.union(dirs, str(target))
