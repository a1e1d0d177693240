"""overlayctl info: kernel overlay support and the store's filesystem."""

from __future__ import annotations

import click

from ._output import json_option, print_json, store_from


@click.command()
@json_option
@click.pass_context
def info(ctx, as_json: bool) -> None:
    """Show the kernel, overlay support, mount API, layer limit, store filesystem and OCI runtime.

    \b
    Example:
      overlayctl info --json
    """
    data = store_from(ctx).system.info()
    if as_json:
        return print_json(data)
    backing = data["backing"]
    click.echo(f"kernel:            {data['kernel']}")
    click.echo(f"overlay:           {'yes' if data['overlay'] else 'no'}")
    click.echo(f"mount API:         {data['mount_api']}")
    click.echo(f"max lower layers:  {data['max_lower_layers']}")
    params = ", ".join(f"{k}={v}" for k, v in sorted(data["module_parameters"].items()))
    click.echo(f"module parameters: {params}")
    click.echo(f"store root:        {data['root']}")
    click.echo(f"run root:          {data['run_root']}")
    click.echo(f"filesystem:        {backing['fs_type']} ({backing['magic']})")
    click.echo(f"d_type:            {'yes' if backing['d_type'] else 'no'}")
    click.echo(f"trusted xattrs:    {'yes' if backing['trusted_xattr'] else 'no'}")
    click.echo(f"whiteouts:         {'yes' if backing['whiteout'] else 'no'}")
    for problem in backing.get("problems", []):
        click.echo(f"problem:           {problem}")
    runtime, monitor = data["containers"]["runtime"], data["containers"]["monitor"]
    if "error" in runtime:
        click.echo(f"OCI runtime:       none ({runtime['error']})")
    else:
        click.echo(f"OCI runtime:       {runtime['name']} {runtime['version']} ({runtime['path']})")
        click.echo(f"  why:             {runtime['reason']}")
    click.echo(f"monitor:           conmon {monitor['version'] or 'not installed'}")
