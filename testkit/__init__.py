"""Helpers shared by the tests and the bench: a private Docker engine, a busybox root filesystem."""
