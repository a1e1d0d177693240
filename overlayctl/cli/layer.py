"""overlayctl layer ...: read-only, content-addressed layers."""

from __future__ import annotations

import sys

import click

from ._output import human_size, json_option, print_json, print_table, short, store_from, when


@click.group()
def layer() -> None:
    """Create, list, export and remove read-only layers.

    \b
    Example:
      overlayctl layer create --from ./rootfs
      overlayctl layer create --from changes.tar.gz --parent 3f2a
    """


@layer.command("create")
@click.option("--from", "source", required=True, help="A directory, or a tar (plain or gzip); '-' reads stdin.")
@click.option("--parent", help="The layer this one sits on (ID or unique prefix).")
@click.option("-m", "--comment", default="", help="A comment kept with the layer.")
@json_option
@click.pass_context
def create(ctx, source: str, parent: str | None, comment: str, as_json: bool) -> None:
    """Make a layer from a directory or an OCI layer tar.

    OCI whiteouts (.wh.NAME) become overlay whiteouts, .wh..wh..opq an opaque
    directory. The same content on the same parent is stored once.

    \b
    Example:
      overlayctl layer create --from ./rootfs -m "base system"
    """
    store = store_from(ctx)
    record = store.layers.create(sys.stdin.buffer if source == "-" else source, parent=parent, comment=comment)
    print_json(record.to_json()) if as_json else click.echo(record.id)


@layer.command("ls")
@json_option
@click.pass_context
def ls(ctx, as_json: bool) -> None:
    """List layers, oldest first.

    \b
    Example:
      overlayctl layer ls --json
    """
    records = store_from(ctx).layers.list()
    if as_json:
        return print_json([r.to_json() for r in records])
    print_table(
        ["LAYER", "PARENT", "SIZE", "CREATED", "COMMENT"],
        [(short(r.id), short(r.parent), human_size(r.size), when(r.created), r.comment) for r in records],
    )


@layer.command("inspect")
@click.argument("ref")
@json_option
@click.pass_context
def inspect(ctx, ref: str, as_json: bool) -> None:
    """Show one layer's record, its directory and what uses it.

    \b
    Example:
      overlayctl layer inspect 3f2a
    """
    store = store_from(ctx)
    record = store.layers.get(ref)
    data = {**record.to_json(), "diff": store.layout.diff(record.id), "used_by": store.layers.users(record.id)}
    if as_json:
        return print_json(data)
    for key, value in data.items():
        click.echo(f"{key + ':':10} {value if value is not None else ''}")


@layer.command("export")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.pass_context
def export(ctx, ref: str, output: str | None) -> None:
    """Write a layer as an OCI layer tar (overlay whiteouts back to .wh. files).

    \b
    Example:
      overlayctl layer export 3f2a -o layer.tar
    """
    store = store_from(ctx)
    if output is None:
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write a tar to a terminal; use -o FILE or a pipe")
        store.layers.export(ref, sys.stdout.buffer)
        return
    tmp = output + ".part"
    try:
        with open(tmp, "wb") as out:
            digest = store.layers.export(ref, out)
        import os

        os.replace(tmp, output)
    except BaseException:
        import contextlib
        import os

        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    click.echo(digest, err=True)


@layer.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def rm(ctx, refs: tuple[str, ...]) -> None:
    """Remove layers that no image and no other layer uses.

    \b
    Example:
      overlayctl layer rm 3f2a
    """
    store = store_from(ctx)
    for ref in refs:
        click.echo(store.layers.remove(ref))
