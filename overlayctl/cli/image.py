"""overlayctl image ...: stacks of layers with a config and tags."""

from __future__ import annotations

import click

from ._output import (
    config_changes,
    config_options,
    human_size,
    json_option,
    print_json,
    print_table,
    short,
    store_from,
    tags_by_image,
    when,
)


@click.group()
def image() -> None:
    """Import, list, tag, inspect and remove images.

    \b
    Example:
      overlayctl image import ./rootfs --tag busybox
      overlayctl image tree
    """


@image.command("import")
@click.argument("source")
@click.option("-t", "--tag", help="Tag the image NAME[:TAG] (default tag: latest).")
@click.option("-m", "--message", default="", help="A comment for the image's history.")
@config_options
@json_option
@click.pass_context
def import_(ctx, source: str, tag: str | None, message: str, as_json: bool, **options) -> None:
    """Import a root filesystem (directory or tar) as a one-layer image.

    \b
    Example:
      overlayctl image import rootfs.tar.gz --tag base:1.0 --cmd "sh -c 'echo hi'"
    """
    record = store_from(ctx).images.import_rootfs(source, tag=tag, comment=message, changes=config_changes(options))
    print_json({"id": record.id, "tag": tag}) if as_json else click.echo(record.id)


@image.command("create")
@click.argument("layer")
@click.option("-t", "--tag", help="Tag the image NAME[:TAG].")
@json_option
@click.pass_context
def create(ctx, layer: str, tag: str | None, as_json: bool) -> None:
    """Make an image from a layer and its parents (bottom layer first).

    \b
    Example:
      overlayctl image create 3f2a --tag app:1
    """
    record = store_from(ctx).images.create(layer, tag=tag)
    print_json({"id": record.id, "tag": tag}) if as_json else click.echo(record.id)


def _image_json(record, tags: dict[str, list[str]], sizes: dict[str, int]) -> dict:
    return {
        "id": record.id,
        "tags": tags.get(record.id, []),
        "parent": record.parent,
        "created": record.created,
        "size": sizes.get(record.id, 0),
        "layers": record.layers,
        "config": record.config,
    }


@image.command("ls")
@json_option
@click.pass_context
def ls(ctx, as_json: bool) -> None:
    """List images with their tags, layer count and size.

    \b
    Example:
      overlayctl image ls
    """
    store = store_from(ctx)
    images = store.images.list()
    tags, sizes = tags_by_image(store), store.images.sizes()
    if as_json:
        return print_json([{k: v for k, v in _image_json(i, tags, sizes).items() if k != "config"} for i in images])
    rows = []
    for record in images:
        for tag in tags.get(record.id) or ["<none>"]:
            rows.append(
                (tag, short(record.id), len(record.layers), human_size(sizes.get(record.id, 0)), when(record.created))
            )
    print_table(["TAG", "IMAGE", "LAYERS", "SIZE", "CREATED"], rows)


@image.command("inspect")
@click.argument("ref")
@json_option
@click.pass_context
def inspect(ctx, ref: str, as_json: bool) -> None:
    """Show an image's record: layers bottom to top, config, history.

    \b
    Example:
      overlayctl image inspect busybox
    """
    store = store_from(ctx)
    image = store.images.get(ref)
    data = _image_json(image, tags_by_image(store), {image.id: store.images.size(image)})
    if as_json:
        return print_json(data)
    click.echo(f"id:       {data['id']}")
    click.echo(f"tags:     {', '.join(data['tags'])}")
    click.echo(f"parent:   {data['parent'] or ''}")
    click.echo(f"created:  {data['created']}")
    click.echo(f"size:     {human_size(data['size'])}")
    click.echo("layers (bottom to top):")
    for layer_id in data["layers"]:
        click.echo(f"  {layer_id}")
    for key, value in data["config"].get("config", {}).items():
        click.echo(f"{key}: {value}")


@image.command("history")
@click.argument("ref")
@json_option
@click.pass_context
def history(ctx, ref: str, as_json: bool) -> None:
    """Show an image's layers, newest first, with size, date and comment.

    \b
    Example:
      overlayctl image history busybox:v2
    """
    rows = store_from(ctx).images.history(ref)
    if as_json:
        return print_json([r.to_json() for r in rows])
    print_table(
        ["LAYER", "CREATED", "SIZE", "CREATED BY", "COMMENT"],
        [(short(r.layer.id), when(r.created), human_size(r.layer.size), r.created_by, r.comment) for r in rows],
    )


@image.command("tree")
@json_option
@click.pass_context
def tree(ctx, as_json: bool) -> None:
    """Draw all images as a tree by parent image, shared bases once.

    \b
    Example:
      overlayctl image tree
    """
    forest = _image_forest(store_from(ctx))
    if as_json:
        return print_json(forest)

    def draw(node: dict, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        tags = ", ".join(node["tags"]) or "<none>"
        size = f"+{human_size(node['own_size'])}" if not top else human_size(node["own_size"])
        layers = f"{node['layers']} layer" + ("s" if node["layers"] != 1 else "")
        total = f"(total {human_size(node['size'])}, {layers})"
        click.echo(f"{prefix}{branch}{short(node['id'])}  {tags}  {size}  {total}")
        children = node["children"]
        for i, child in enumerate(children):
            draw(child, prefix + ("" if top else ("   " if last else "│  ")), i == len(children) - 1, False)

    for root in forest:
        draw(root, "", True, True)


def _image_forest(store) -> list[dict]:
    """Images as a forest by parent image; each node: id, tags, size, own size, children."""
    images = store.images.list()
    by_id = {i.id: i for i in images}
    tags = tags_by_image(store)
    sizes = {layer.id: layer.size for layer in store.layers.list()}

    def node(image) -> dict:
        parent = by_id.get(image.parent or "")
        own = image.layers[len(parent.layers) :] if parent else image.layers
        return {
            "id": image.id,
            "tags": tags.get(image.id, []),
            "layers": len(image.layers),
            "size": sum(sizes.get(layer, 0) for layer in image.layers),
            "own_size": sum(sizes.get(layer, 0) for layer in own),
            "created": image.created,
            "children": [node(c) for c in images if c.parent == image.id],
        }

    return [node(i) for i in images if (i.parent or "") not in by_id]


@image.command("tag")
@click.argument("ref")
@click.argument("new_tag")
@click.pass_context
def tag(ctx, ref: str, new_tag: str) -> None:
    """Give an image another tag.

    \b
    Example:
      overlayctl image tag 9c1e busybox:stable
    """
    click.echo(store_from(ctx).images.tag(ref, new_tag))


@image.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Remove all tags and the image even if it has child images.")
@click.pass_context
def rm(ctx, refs: tuple[str, ...], force: bool) -> None:
    """Untag or remove images; layers no longer used are removed too.

    \b
    Example:
      overlayctl image rm busybox:old
    """
    store = store_from(ctx)
    for ref in refs:
        result = store.images.remove(ref, force=force)
        for t in result.untagged:
            click.echo(f"Untagged: {t}")
        for i in result.deleted:
            click.echo(f"Deleted: {i}")
        for layer_id in result.layers:
            click.echo(f"Deleted layer: {layer_id}")


@image.command("load")
@click.option(
    "-i", "--input", "source", default="-", show_default=True, help="A tar, an OCI layout directory, or '-' (stdin)."
)
@click.option("-t", "--tag", help="Also tag the image NAME[:TAG] (an archive of one image).")
@click.option("--platform", help="OS/ARCH[/VARIANT] to pick from a multi-platform index [default: the host's].")
@json_option
@click.pass_context
def load(ctx, source: str, tag: str | None, platform: str | None, as_json: bool) -> None:
    """Load images from a 'docker save' archive or an OCI image layout.

    Layers may be plain, gzip or zstd; every blob and layer is checked
    against its digest, and the image ID is the config digest, as Docker's.

    \b
    Example:
      overlayctl image load -i busybox-oci/ --platform linux/arm64 --tag busybox:arm
      docker save busybox | overlayctl image load
    """
    import sys

    from ..errors import InvalidArgument
    from ._progress import terminal_progress

    if source == "-" and sys.stdin.isatty():
        raise InvalidArgument("no archive on stdin", hint="give -i PATH, or pipe an archive in")
    archive = sys.stdin.buffer if source == "-" else source
    with terminal_progress("Loading", "Loaded", quiet=as_json) as bar:
        report = store_from(ctx).images.load(archive, tag=tag, platform=platform, progress=bar)
    if as_json:
        return print_json(report.to_json())
    for loaded in report.images:
        for ref, old in loaded.moved.items():
            click.echo(f"Moved tag: {ref} (was {short(old)})")
        for ref in loaded.tags:
            click.echo(f"Loaded image: {ref}")
        if not loaded.tags:
            click.echo(f"Loaded image ID: {loaded.id}")
    click.echo(
        f"Layers: {report.layers_written} written ({human_size(report.bytes_written)}), {report.layers_reused} reused"
    )


@image.command("save")
@click.argument("refs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="A file, '-' (stdout), or a new directory with --format oci-dir.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["docker-archive", "oci-archive", "oci-dir"]),
    default="docker-archive",
    show_default=True,
    help="docker-archive: Docker 25's form, read by docker, podman and skopeo alike.",
)
@json_option
@click.pass_context
def save(ctx, refs: tuple[str, ...], output: str, fmt: str, as_json: bool) -> None:
    """Save images to an archive that 'docker load', 'podman load' and skopeo take.

    Tags named on the command line are written; an image named by ID is
    saved untagged.  A layer loaded from a tar is saved as the same bytes,
    and the same images give the same archive.

    \b
    Example:
      overlayctl image save busybox:v2 -o busybox.tar && docker load -i busybox.tar
      overlayctl image save busybox --format oci-dir -o busybox-oci/
    """
    import sys

    from ..errors import InvalidArgument
    from ._progress import terminal_progress

    store = store_from(ctx)
    if output == "-" and fmt != "oci-dir" and sys.stdout.isatty():
        raise InvalidArgument("refusing to write an archive to a terminal", hint="give -o FILE or redirect stdout")
    with terminal_progress("Saving", "Saved", quiet=as_json) as bar:
        if fmt == "oci-dir":
            report = store.images.save(list(refs), output, format=fmt, progress=bar)
        elif output == "-":
            report = store.images.save(list(refs), sys.stdout.buffer, format=fmt, progress=bar)
        else:
            report = _save_to_file(store, list(refs), output, fmt, progress=bar)
    summary = f"Saved {len(report.images)} image(s), {report.layers} layer(s), {human_size(report.bytes)}"
    if as_json:
        print_json(report.to_json()) if output != "-" else click.echo(summary, err=True)
    else:
        click.echo(summary, err=output == "-")


def _save_to_file(store, refs: list[str], output: str, fmt: str, progress=None):
    """Write to output through a temporary name, so a failed save leaves no half archive."""
    import os

    partial = f"{output}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as f:
            report = store.images.save(refs, f, format=fmt, progress=progress)
        os.rename(partial, output)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return report
