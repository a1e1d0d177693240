"""MountPlan: the plain-data description of one overlay mount."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The kernel's stacking limit (OVL_MAX_STACK in fs/overlayfs/params.h).
MAX_LOWER_LAYERS = 500

Option = tuple[str, "str | None"]


def option_value(options: tuple[Option, ...], key: str) -> str | None:
    """The value of an option (last one wins, as in the kernel); "" for a flag, None if absent."""
    value = None
    for k, v in options:
        if k == key:
            value = v if v is not None else ""
    return value


@dataclass(frozen=True, slots=True)
class MountPlan:
    """One overlay mount, described but not performed.

    ``lowers`` are absolute directories, **top first** (the kernel's order).
    ``links`` optionally names the same lowers as short relative paths under
    ``link_base`` (the store root), used by the classic ``mount(2)`` path to
    keep the option string inside one page.  A plan without ``upper`` is a
    read-only union.  ``options`` are the feature options, in order, as
    ``(key, value)`` pairs, ``value`` ``None`` for a flag such as ``volatile``.
    """

    lowers: tuple[str, ...]
    target: str
    upper: str | None = None
    work: str | None = None
    options: tuple[Option, ...] = ()
    links: tuple[str, ...] | None = None
    link_base: str | None = None
    #: What each lower is, for people: parallel to ``lowers`` ("init", a layer ID, ...).
    labels: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if (self.upper is None) != (self.work is None):
            raise ValueError("upper and work go together")
        if self.links is not None and len(self.links) != len(self.lowers):
            raise ValueError("links must match lowers one to one")

    @property
    def readonly(self) -> bool:
        return self.upper is None

    def to_json(self) -> dict[str, Any]:
        return {
            "lowers": list(self.lowers),
            "labels": list(self.labels),
            "upper": self.upper,
            "work": self.work,
            "target": self.target,
            "options": [k if v is None else f"{k}={v}" for k, v in self.options],
            "readonly": self.readonly,
        }
