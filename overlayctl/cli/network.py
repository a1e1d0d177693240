"""overlayctl network: the bridge network's name, subnet and addresses."""

from __future__ import annotations

import click

from ._output import json_option, print_json, store_from


@click.group()
def network() -> None:
    """Show or set the bridge network used by 'run --network bridge'.

    \b
    Example:
      overlayctl network show
      overlayctl network set --bridge ovl0 --subnet 10.213.0.0/24
    """


@network.command("show")
@json_option
@click.pass_context
def show(ctx, as_json: bool) -> None:
    """Show the bridge name, subnet, gateway and the addresses handed out.

    \b
    Example:
      overlayctl network show --json
    """
    data = store_from(ctx).runtime.network().to_json()
    if as_json:
        return print_json(data)
    click.echo(f"bridge:   {data['bridge']}")
    click.echo(f"subnet:   {data['subnet']}")
    click.echo(f"gateway:  {data['gateway']}")
    for address, owner in sorted(data["addresses"].items()):
        click.echo(f"address:  {address}  {owner}")


@network.command("set")
@click.option("--bridge", help="The bridge device's name (at most 15 characters).")
@click.option("--subnet", help="A private IPv4 subnet, /16 to /29.")
@click.pass_context
def set_(ctx, bridge: str | None, subnet: str | None) -> None:
    """Change the bridge name or subnet (refused while addresses are handed out).

    \b
    Example:
      overlayctl network set --subnet 10.213.5.0/24
    """
    store_from(ctx).runtime.configure_network(bridge=bridge, subnet=subnet)
