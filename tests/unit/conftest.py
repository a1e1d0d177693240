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


def race(target, arg_lists: list[tuple]) -> dict:
    """Run target(*args, start, results) in one forked process per args, all let go at once.

    Each process puts a list of (key, value) pairs on results; the merged dict
    of all of them is returned once every process exited with 0.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(len(arg_lists))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, results)) for args in arg_lists]
    for p in procs:
        p.start()
    got = dict(pair for _ in procs for pair in results.get(timeout=60))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return got
