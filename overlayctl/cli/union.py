"""overlayctl mount / umount: a union of plain directories, no store objects."""

from __future__ import annotations

import click

from ._output import store_from


@click.command()
@click.option("--lower", "lowers", multiple=True, required=True, help="A lower directory; the first is on top.")
@click.option("--upper", help="A writable directory; without it the union is read-only.")
@click.option("-o", "--option", "options", multiple=True, help="Overlay option (volatile, redirect_dir=, ...).")
@click.argument("target")
@click.pass_context
def mount(ctx, lowers: tuple[str, ...], upper: str | None, options: tuple[str, ...], target: str) -> None:
    """Union-mount directories at TARGET in the caller's namespace.

    The work directory is made beside the upper.

    \b
    Example:
      overlayctl mount --lower ./app --lower ./base --upper ./rw /mnt/union
    """
    store_from(ctx).mounts.union(lowers, target, upper=upper, options=options)


@click.command()
@click.argument("target")
@click.pass_context
def umount(ctx, target: str) -> None:
    """Unmount a union made by 'overlayctl mount' and remove its work directory.

    \b
    Example:
      overlayctl umount /mnt/union
    """
    store_from(ctx).mounts.unmount_union(target)
