"""Fixtures of the unit tests: a store layout in a temporary directory, its lock."""

from __future__ import annotations

import pytest

from overlayctl.store.layout import StoreLayout
from overlayctl.store.lock import StoreLock


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return StoreLayout(str(root), str(tmp_path / "run"))


@pytest.fixture
def lock(layout):
    """The store lock, held: the functions that change the store's files run only under it."""
    lock = StoreLock(layout.lock, timeout=10)
    with lock:
        yield lock
