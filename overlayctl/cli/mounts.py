"""overlayctl mounts: overlay mounts of a namespace, mapped back to the store."""

from __future__ import annotations

import click

from ._output import json_option, print_json, short, store_from


def _label(entry: dict | None) -> str:
    if not entry:
        return ""
    store = entry["store"]
    if store is None:
        return "(not in this store)"
    if store["kind"] == "layer":
        return f"layer {short(store['id'])}"
    if store["kind"] == "link":
        return f"link {store['id']} ({store.get('detail', '')})"
    return f"{store['kind']} of container {store.get('name') or store['container'][:12]}"


@click.command()
@click.option("--pid", type=int, help="Read the mount namespace of this process.")
@click.option("--container", "container", help="Read the container's pinned mount namespace.")
@json_option
@click.pass_context
def mounts(ctx, pid: int | None, container: str | None, as_json: bool) -> None:
    """Show every overlay mount with its decoded options.

    Each lower, upper and work directory is named: an image layer, a
    container's init layer, upper or work, or "not in this store".

    \b
    Example:
      overlayctl mounts --container web
    """
    if pid is not None and container is not None:
        raise click.UsageError("give --pid or --container, not both")
    reports = [m.to_json() for m in store_from(ctx).mounts.list(pid=pid, container=container)]
    if as_json:
        return print_json(reports)
    if not reports:
        click.echo("no overlay mounts", err=True)
    for report in reports:
        mode = "ro" if report["readonly"] else "rw"
        click.echo(f"{report['target']} ({mode}, mount {report['mount_id']})")
        click.echo(f"  options: {','.join(report['options'])}")
        for i, lower in enumerate(report["lowers"]):
            click.echo(f"  lower[{i}] {lower['path']}  {_label(lower)}")
        for role in ("upper", "work"):
            if report[role]:
                click.echo(f"  {role:8} {report[role]['path']}  {_label(report[role])}")
