"""overlayctl pull / push / login / logout: images between the store and registries."""

from __future__ import annotations

import click

from ._output import human_size, json_option, print_json, short, store_from

_INSECURE = click.option(
    "--insecure", is_flag=True, help="Allow plain HTTP to a registry that is not on a loopback address."
)


@click.command()
@click.argument("reference")
@click.option("--platform", help="OS/ARCH[/VARIANT] to pick from a multi-platform index [default: the host's].")
@click.option("-j", "--jobs", type=click.IntRange(min=1, max=32), help="Blobs fetched at once [default: 3].")
@click.option(
    "--keep-blobs",
    is_flag=True,
    help="Keep the blobs and the manifest in the download cache: push and 'image save --format oci-archive' "
    "then give the registry's manifest digest.",
)
@_INSECURE
@json_option
@click.pass_context
def pull(
    ctx, reference: str, platform: str | None, jobs: int | None, keep_blobs: bool, insecure: bool, as_json: bool
) -> None:
    """Pull an image from a registry (Docker Hub for a bare name).

    Layers already in the store are not fetched; each blob streams into
    its layer while its digest is checked. A pull by tag tags the image;
    a pull by digest leaves it untagged, as 'docker pull' does.

    \b
    Example:
      overlayctl pull 127.0.0.1:5000/team/app:v2
      overlayctl pull --platform linux/arm64 busybox
    """
    from ._progress import terminal_progress

    with terminal_progress("Pulling", "Pulled", quiet=as_json, per_layer=True) as bar:
        report = store_from(ctx).registries.pull(
            reference, platform=platform, insecure=insecure, jobs=jobs, progress=bar, keep_blobs=keep_blobs
        )
    if as_json:
        return print_json(report.to_json())
    fetched = [layer for layer in report.layers if layer.status == "fetched"]
    click.echo(
        f"{len(fetched)} layers fetched ({human_size(sum(layer.bytes for layer in fetched))}), "
        f"{len(report.layers) - len(fetched)} already present"
    )
    click.echo(f"Digest: {report.manifest}")
    for tag in report.tags:
        click.echo(f"Pulled image: {tag}")
    if not report.tags:
        click.echo(f"Pulled image ID: {short(report.id)}")


@click.command()
@click.argument("source")
@click.argument("destination", required=False)
@click.option(
    "--compress",
    "compression",
    type=click.Choice(["gzip", "zstd"]),
    default="gzip",
    show_default=True,
    help="How layer blobs are compressed.",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1, max=32), help="Layers pushed at once [default: 3].")
@_INSECURE
@json_option
@click.pass_context
def push(
    ctx, source: str, destination: str | None, compression: str, jobs: int | None, insecure: bool, as_json: bool
) -> None:
    """Push an image to a registry: to DESTINATION, or to where SOURCE's name says.

    \b
    Example:
      overlayctl push 127.0.0.1:5000/team/app:v2
      overlayctl push app:2 127.0.0.1:5000/team/app:v2
    """
    from ._progress import terminal_progress

    with terminal_progress("Pushing", "Pushed", quiet=as_json, per_layer=True) as bar:
        report = store_from(ctx).registries.push(
            source, destination, compression=compression, insecure=insecure, jobs=jobs, progress=bar
        )
    if as_json:
        return print_json(report.to_json())
    for layer in report.layers:
        click.echo(f"{short(layer.digest)}: {'pushed' if layer.status == 'uploaded' else 'layer already exists'}")
    click.echo(f"{report.reference}: digest: {report.manifest}")


@click.command()
@click.argument("host", required=False, default="docker.io")
@click.option("-u", "--username", help="The user name [default: asked on a terminal].")
@click.option("-p", "--password", help="The password (visible to other users: prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_INSECURE
@click.pass_context
def login(ctx, host: str, username: str | None, password: str | None, password_stdin: bool, insecure: bool) -> None:
    """Log in to a registry: check the credentials, then keep them in Docker's config.json.

    The file is $DOCKER_CONFIG/config.json, else ~/.docker/config.json;
    a configured credential helper (credsStore, credHelpers) keeps them instead.

    \b
    Example:
      overlayctl login -u ci --password-stdin 127.0.0.1:5000 < token.txt
    """
    import sys

    from ..errors import InvalidArgument

    if password_stdin:
        if password is not None:
            raise InvalidArgument("give --password or --password-stdin, not both")
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    if not username or not password:
        raise InvalidArgument("a user name and a password are needed")
    store_from(ctx).registries.login(host, username, password, insecure=insecure)
    click.echo("Login Succeeded")


@click.command()
@click.argument("host", required=False, default="docker.io")
@click.pass_context
def logout(ctx, host: str) -> None:
    """Forget the credentials of a registry.

    \b
    Example:
      overlayctl logout 127.0.0.1:5000
    """
    if store_from(ctx).registries.logout(host):
        click.echo(f"Removing login credentials for {host}")
    else:
        click.echo(f"Not logged in to {host}")
