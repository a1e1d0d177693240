"""overlayctl system df / prune: the store's disk usage, and removing what nothing uses."""

from __future__ import annotations

import click

from ._output import human_size, json_option, print_json, print_table, short, store_from


@click.group()
def system() -> None:
    """Disk usage of the store, and pruning what nothing uses.

    \b
    Example:
      overlayctl system df -v
      overlayctl system prune -f
    """


@system.command("df")
@click.option("-v", "--verbose", is_flag=True, help="One row per image, layer and container.")
@json_option
@click.pass_context
def df(ctx, verbose: bool, as_json: bool) -> None:
    """Show disk usage: images, layers and containers, and what prune could free.

    Layer sizes and inode counts were recorded when each layer was made;
    only containers' uppers are measured now.

    \b
    Example:
      overlayctl system df -v
    """
    usage = store_from(ctx).system.df()
    if as_json:
        return print_json(usage.to_json())
    rows = [(r["type"], r["total"], r["active"], human_size(r["size"]), _share(r)) for r in usage.summary()]
    print_table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows)
    if not verbose:
        return
    click.echo("\nImages space usage:\n")
    rows = [
        (
            ", ".join(i.tags) or "<none>",
            short(i.id),
            human_size(i.size),
            human_size(i.shared),
            human_size(i.unique),
            i.containers,
        )
        for i in usage.images
    ]
    print_table(["TAGS", "IMAGE ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"], rows)
    click.echo("\nLayers space usage:\n")
    rows = [(short(r["id"]), human_size(r["size"]), r["inodes"], r["images"]) for r in usage.layers]
    print_table(["LAYER ID", "SIZE", "INODES", "IMAGES"], rows)
    click.echo("\nContainers space usage:\n")
    rows = [
        (
            c["name"],
            short(c["id"]),
            short(c["image"]),
            human_size(c["size"]),
            c["inodes"],
            "running" if c["running"] else "stopped",
        )
        for c in usage.containers
    ]
    print_table(["NAME", "CONTAINER ID", "IMAGE", "SIZE", "INODES", "STATE"], rows)


def _share(row: dict) -> str:
    percent = f" ({100 * row['reclaimable'] // row['size']}%)" if row["size"] else ""
    return human_size(row["reclaimable"]) + percent


@system.command("prune")
@click.option(
    "-a", "--all", "all_images", is_flag=True, help="Remove every image no container uses, not only untagged ones."
)
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def prune(ctx, all_images: bool, force: bool, as_json: bool) -> None:
    """Remove stopped containers, dangling images, unused layers and leftovers.

    A stopped container that is mounted is kept; so is every image a
    container uses.  Layers that no image, container or other layer uses
    go too, as do staging and trash left by processes that died.

    \b
    Example:
      overlayctl system prune -a -f
    """
    if not force and not as_json:
        what = "all images without a container" if all_images else "dangling images"
        click.confirm(f"This removes stopped containers, {what} and unused layers. Continue?", abort=True)
    report = store_from(ctx).system.prune(all_images=all_images)
    if as_json:
        return print_json(report.to_json())
    for name in report.containers:
        click.echo(f"Deleted container: {name}")
    for image_id in report.images:
        click.echo(f"Deleted image: {image_id}")
    for layer_id in report.layers:
        click.echo(f"Deleted layer: {layer_id}")
    for path in report.leftovers:
        click.echo(f"Deleted leftover: {path}")
    click.echo(f"Total reclaimed space: {human_size(report.freed)}")
