"""Printing for the CLI: tables, JSON, sizes, the store from the context."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def config_options(func):
    """--cmd/--entrypoint/--env/--workdir, as docker import --change spells them."""
    options = [
        click.option("--cmd", help="Default command: shell words or a JSON array, e.g. '[\"sh\"]'."),
        click.option("--entrypoint", help="Entrypoint: shell words or a JSON array."),
        click.option("-e", "--env", multiple=True, help="Set KEY=VALUE in the image's Env (repeatable)."),
        click.option("-w", "--workdir", help="Default working directory (absolute)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_changes(options: dict) -> dict:
    """The config_options values, for LayerStore.import_image and commit."""
    return {key: options.pop(key) for key in ("cmd", "entrypoint", "env", "workdir")}


def store_from(ctx: click.Context):
    from ..api import LayerStore

    obj = ctx.find_root().obj or {}
    return LayerStore(obj.get("root"), obj.get("run_root"), lock_timeout=obj.get("lock_timeout", 30.0))


def tags_by_image(store) -> dict[str, list[str]]:
    """{image ID: its tags}; with a damaged tags.json, {} and a warning (listings go on)."""
    import warnings

    from ..errors import DamagedRecordWarning, StoreError

    try:
        tags = store.images.tags()
    except StoreError as exc:
        warnings.warn(exc.message, DamagedRecordWarning, stacklevel=2)
        return {}
    by_image: dict[str, list[str]] = {}
    for ref, image_id in sorted(tags.items()):
        by_image.setdefault(image_id, []).append(ref)
    return by_image


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths))
        click.echo(line.rstrip())


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def short(digest: str | None) -> str:
    return digest.split(":", 1)[-1][:12] if digest else ""


def when(stamp: str) -> str:
    return stamp[:19].replace("T", " ") if stamp else ""
