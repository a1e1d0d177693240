"""The exception tree of overlayctl: every error a user can see.

::

    OverlayctlError          one-line .message, optional .hint; exit_code 1
    │                        .errno, .call, .detail: set when made from an OSError
    ├── InvalidArgument      bad reference, ambiguous ID prefix, bad option (exit 2)
    ├── NotFound             no such layer / image / container / tag / file (ENOENT)
    ├── AlreadyExists        name or tag taken (EEXIST)
    ├── InUse                layer used by an image, container still mounted (EBUSY)
    ├── StoreError           lock timeout, damaged record, unusable backing filesystem,
    │                        no space left (ENOSPC, EDQUOT)
    ├── ArchiveError         unreadable or unsupported archive
    │   └── UnsafeArchive    entry escapes the layer (.., absolute, symlink or hardlink outside)
    ├── RegistryError        a registry, its token server or a credential helper refused or answered
    │                        something unusable; Docker's config.json unreadable
    ├── ContainerFailed      the container's command could not start; exit_code is the container's
    │   └── CommandNotFound  no such command in the container (exit 127)
    └── KernelError          any other failed system call; .detail is the kernel's own text
        ├── NotPermitted     EPERM/EACCES: not root, or root without the capability
        ├── OverlayUnsupported
        └── TooManyLayers

Beside the tree, one warning: DamagedRecordWarning, when a listing skips a
record it cannot read (the other objects keep working; ``check`` names it).

The classes say what the caller should do next, not which module failed.
Foreign errors are translated at one boundary each: an OSError by
``from_oserror`` below (the only errno-to-class mapping), tarfile errors in
``archive``.
"""

from __future__ import annotations

import errno
import os
import sys


class OverlayctlError(Exception):
    """Base class: a one-line message for the user, and optionally a hint."""

    exit_code = 1
    # Set by from_oserror (and KernelError) when a system call failed.
    errno: int = 0
    call: str = ""
    detail: str = ""

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
    """No such layer, image, tag, container or file."""


class AlreadyExists(OverlayctlError):
    """A name or tag is already taken."""


class InUse(OverlayctlError):
    """The object is still used (by an image, a container or a mount)."""


class StoreError(OverlayctlError):
    """The store cannot do this: lock timeout, damaged record, unusable or full filesystem."""


class ArchiveError(OverlayctlError):
    """The archive cannot be read or has an unsupported form."""


class UnsafeArchive(ArchiveError):
    """An archive entry would write outside the layer or forge overlay metadata."""


class RegistryError(OverlayctlError):
    """Registry access failed: the registry, its token server or a credential helper, or Docker's config.json."""


class ContainerFailed(OverlayctlError):
    """The container's command could not be started; exit_code is the container's.

    The codes are Docker's: 125 when the setup failed, 126 when the command
    cannot be executed, 127 when it is not found.
    """

    exit_code = 125

    def __init__(self, message: str, exit_code: int | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        if exit_code is not None:
            self.exit_code = exit_code


class CommandNotFound(ContainerFailed):
    """The command is not in the container (neither at its path nor on its PATH)."""

    exit_code = 127


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


# --- the OSError boundary ----------------------------------------------------

#: Errnos that say what to do next whatever the call was.  Anything else is a
#: plain KernelError; ENOENT and ENOTDIR go to the caller's ``missing`` class.
_CLASS_OF_ERRNO: dict[int, type[OverlayctlError]] = {
    errno.EPERM: NotPermitted,
    errno.EACCES: NotPermitted,
    errno.EEXIST: AlreadyExists,
    errno.EBUSY: InUse,
    errno.ENOSPC: StoreError,
    errno.EDQUOT: StoreError,
}
_MISSING_ERRNOS = (errno.ENOENT, errno.ENOTDIR)


def from_oserror(
    exc: OSError,
    *,
    what: str = "",
    call: str = "",
    hint: str | None = None,
    detail: str = "",
    missing: type[OverlayctlError] = NotFound,
) -> OverlayctlError:
    """The error to raise for a failed system call; ``raise from_oserror(exc, ...) from exc``.

    The one place that maps an errno to a class, so that the same errno means
    the same next step everywhere.  The message is one line,
    ``what: file: reason``, where file is the OSError's filename unless
    ``what`` already names it.  reason is ``detail`` (the kernel's own words,
    when the caller has them), else the errno's text when ``call`` names the
    call, else the OSError's own text (our libc wrappers put the call in it).

    hint is advice for errnos that have none of their own (EPERM/EACCES,
    ENOSPC/EDQUOT and EBUSY do).  missing is the class for ENOENT/ENOTDIR:
    NotFound when a missing file is the user's to fix, KernelError where it
    is the kernel's business (a cgroup feature, a netlink object).  The
    errno, call and detail are kept on the error, whatever its class.
    """
    code = exc.errno or 0
    cls = missing if code in _MISSING_ERRNOS else _CLASS_OF_ERRNO.get(code, KernelError)
    error = cls(_message(exc, what, call, detail), hint=_advice(exc) or hint)
    error.errno, error.call, error.detail = code, call, detail
    return error


def _message(exc: OSError, what: str, call: str, detail: str) -> str:
    if detail:
        reason = detail
    elif exc.errno and call:
        reason = os.strerror(exc.errno)
    else:
        reason = exc.strerror or str(exc) or type(exc).__name__
    where = _path_text(exc.filename)
    if where and exc.filename2 is not None:
        where += f" -> {_path_text(exc.filename2)}"
    parts = [what, "" if where in what else where, reason]
    return ": ".join(p for p in parts if p).replace("\n", " ")


def _path_text(name: object) -> str:
    if name is None:
        return ""
    if isinstance(name, (str, bytes, os.PathLike)):
        return os.fsdecode(name)
    return str(name)  # a file descriptor


def _advice(exc: OSError) -> str | None:
    """What an errno alone tells the user to do, or None."""
    code = exc.errno
    if code in (errno.EPERM, errno.EACCES):
        if os.geteuid() != 0:
            return "run as root"
        return "denied even to root: a missing capability, a security module or an immutable file"
    if code in (errno.ENOSPC, errno.EDQUOT):
        where = f"the filesystem holding {_path_text(exc.filename)}" if exc.filename is not None else "the filesystem"
        return f"free space on {where}" + (" or raise the quota" if code == errno.EDQUOT else "")
    if code == errno.EBUSY:
        return "a process or a mount still uses it"
    return None


class DamagedRecordWarning(UserWarning):
    """A listing went on without a record it could not read; ``check`` names it.

    Not an error: the other objects keep working.  The CLI shows it as one
    ``warning:`` line on stderr.
    """
