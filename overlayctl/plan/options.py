"""Overlay option strings: validation, escaping and the one-page budget.

All option text for the kernel is built here, for both mount APIs.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidArgument, TooManyLayers
from .mountplan import MAX_LOWER_LAYERS, MountPlan, Option

#: mount(2) copies one page of data and cuts it at byte 4095, silently.
CLASSIC_DATA_LIMIT = 4095

#: Feature options a user may ask for: key -> accepted values (None: a flag).
FEATURE_OPTIONS: dict[str, frozenset[str] | None] = {
    "volatile": None,
    "userxattr": None,
    "redirect_dir": frozenset({"on", "follow", "nofollow", "off"}),
    "metacopy": frozenset({"on", "off"}),
    "index": frozenset({"on", "off"}),
    "xino": frozenset({"on", "off", "auto"}),
}

#: What overlayctl passes unless asked otherwise.  Module parameters change
#: the kernel's defaults per host, so every feature a correct upper diff depends
#: on is spelled out: no redirects and no metacopy stubs (an upper with either
#: is not a complete changeset), no index (it ties an upper to its lowers).
DEFAULT_OPTIONS: tuple[Option, ...] = (
    ("redirect_dir", "nofollow"),
    ("index", "off"),
    ("metacopy", "off"),
)


def parse_feature_options(items: Iterable[str]) -> tuple[Option, ...]:
    """Parse ``key`` / ``key=value`` strings, refusing unknown keys and values."""
    parsed: list[Option] = []
    for item in items:
        for part in item.split(","):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if key not in FEATURE_OPTIONS:
                known = ", ".join(sorted(FEATURE_OPTIONS))
                raise InvalidArgument(f"unknown overlay option {key!r}", hint=f"known: {known}")
            allowed = FEATURE_OPTIONS[key]
            if allowed is None:
                if sep:
                    raise InvalidArgument(f"overlay option {key!r} takes no value")
                parsed.append((key, None))
            else:
                if value not in allowed:
                    raise InvalidArgument(
                        f"overlay option {key}={value!r} is not valid",
                        hint="use " + " or ".join(f"{key}={v}" for v in sorted(allowed)),
                    )
                parsed.append((key, value))
    return tuple(parsed)


def merge_options(requested: Iterable[Option]) -> tuple[Option, ...]:
    """The defaults, overridden key by key by what was requested.

    ``metacopy=on`` needs redirects, and ``userxattr`` forbids following them:
    a default that would conflict with a requested option is dropped so that
    the kernel picks the compatible value.
    """
    requested = tuple(requested)
    keys = {k for k, _ in requested}
    wants = dict(requested)
    merged: list[Option] = []
    for key, value in DEFAULT_OPTIONS:
        if key in keys:
            continue
        if key == "redirect_dir" and wants.get("metacopy") == "on":
            continue
        merged.append((key, value))
    merged.extend(requested)
    return tuple(merged)


def escape_lower(path: str) -> str:
    """Escape a path for a classic ``lowerdir=`` list (``\\``, ``:`` and ``,``)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def escape_path(path: str) -> str:
    """Escape an ``upperdir``/``workdir`` value.

    Both APIs drop backslashes from these values, and mount(2) splits at
    unescaped commas, so ``\\`` and ``,`` are escaped.
    """
    return path.replace("\\", "\\\\").replace(",", "\\,")


def format_option(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


def check_layer_count(count: int) -> None:
    if count > MAX_LOWER_LAYERS:
        raise TooManyLayers(
            f"{count} lower layers: the kernel stacks at most {MAX_LOWER_LAYERS}",
            hint="squash or flatten the image",
        )


def classic_data(plan: MountPlan) -> str:
    """The ``mount(2)`` data string for a plan, short links when it has them.

    Raises TooManyLayers when the string does not fit in one page: the kernel
    would cut it silently and mount the wrong layers.
    """
    check_layer_count(len(plan.lowers))
    lowers = plan.links if plan.links is not None else plan.lowers
    parts = ["lowerdir=" + ":".join(escape_lower(p) for p in lowers)]
    if plan.upper is not None:
        parts.append("upperdir=" + escape_path(plan.upper))
        parts.append("workdir=" + escape_path(plan.work or ""))
    parts.extend(format_option(k, v) for k, v in plan.options)
    data = ",".join(parts)
    size = len(data.encode("utf-8", "surrogateescape"))
    if size > CLASSIC_DATA_LIMIT:
        raise TooManyLayers(
            f"mount options for {len(plan.lowers)} layers take {size} bytes; "
            f"mount(2) takes at most {CLASSIC_DATA_LIMIT}",
            hint="this kernel lacks lowerdir+ (Linux 6.8); use fewer layers",
        )
    return data


def fsconfig_strings(plan: MountPlan) -> list[tuple[str, str | None]]:
    """The ``fsconfig`` key/value calls for the new mount API, in order.

    ``lowerdir+`` takes one path per call, literally (no escaping).
    """
    check_layer_count(len(plan.lowers))
    return [("lowerdir+", p) for p in plan.lowers] + fsconfig_settings(plan)


def fsconfig_settings(plan: MountPlan) -> list[tuple[str, str | None]]:
    """The calls after the layers: upper, work and the feature options."""
    calls: list[tuple[str, str | None]] = []
    if plan.upper is not None:
        calls.append(("upperdir", escape_path(plan.upper)))
        calls.append(("workdir", escape_path(plan.work or "")))
    calls.extend(plan.options)
    return calls
