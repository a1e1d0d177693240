"""The exception tree of overlayctl: every error a user can see.

::

    OverlayctlError          one-line .message, optional .hint; exit_code 1
    ├── InvalidArgument      bad reference, ambiguous ID prefix, bad option (exit 2)
    ├── NotFound             no such layer / image / container / tag
    ├── AlreadyExists        name or tag taken
    ├── InUse                layer used by an image, container still mounted
    ├── StoreError           lock timeout, damaged record, unusable backing filesystem
    ├── ArchiveError         unreadable or unsupported archive
    │   └── UnsafeArchive    entry escapes the layer (.., absolute, symlink or hardlink outside)
    └── KernelError          .errno, .call, .detail (the kernel's own text)
        ├── NotPermitted     EPERM/EACCES: not root
        ├── OverlayUnsupported
        └── TooManyLayers

The classes say what the caller should do next, not which module failed.
Foreign errors (OSError, tarfile errors) are translated at one boundary each.
"""

from __future__ import annotations

import sys


class OverlayctlError(Exception):
    """Base class: a one-line message for the user, and optionally a hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format(self) -> str:
        """The one line shown on stderr."""
        if self.hint:
            return f"error: {self.message} ({self.hint})"
        return f"error: {self.message}"

    def show(self, file=None) -> None:
        print(self.format(), file=file or sys.stderr)


class InvalidArgument(OverlayctlError):
    """The caller gave a value that cannot be used as it is."""

    exit_code = 2


class NotFound(OverlayctlError):
    """No such layer, image, tag or container."""


class AlreadyExists(OverlayctlError):
    """A name or tag is already taken."""


class InUse(OverlayctlError):
    """The object is still used (by an image, a container or a mount)."""


class StoreError(OverlayctlError):
    """The store cannot do this: lock timeout, damaged record, unusable filesystem."""


class ArchiveError(OverlayctlError):
    """The archive cannot be read or has an unsupported form."""


class UnsafeArchive(ArchiveError):
    """An archive entry would write outside the layer or forge overlay metadata."""


class KernelError(OverlayctlError):
    """A system call failed; carries the errno, the call and the kernel's own text."""

    def __init__(
        self,
        message: str,
        *,
        errno: int = 0,
        call: str = "",
        detail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.errno = errno
        self.call = call
        self.detail = detail


class NotPermitted(KernelError):
    """The kernel refused for lack of privilege: run as root."""


class OverlayUnsupported(KernelError):
    """The kernel has no overlay filesystem (or lacks a needed feature)."""


class TooManyLayers(KernelError):
    """More lower layers than the kernel can stack."""
