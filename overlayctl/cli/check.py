"""overlayctl check: the store's records against its directories."""

from __future__ import annotations

import sys

import click

from ._output import json_option, print_json, store_from


@click.command()
@click.option("--repair", is_flag=True, help="Remove garbage: unfinished work, orphan directories, dangling links.")
@json_option
@click.pass_context
def check(ctx, repair: bool, as_json: bool) -> None:
    """Check the store; exit 1 if anything is wrong that --repair cannot fix.

    \\b
    Example:
      overlayctl check --repair
    """
    result = store_from(ctx).check(repair=repair)
    if as_json:
        print_json(result)
    else:
        for problem in result["removed"]:
            click.echo(f"removed: {problem['path']}: {problem['message']}")
        for problem in result["problems"]:
            fix = " (garbage: --repair removes it)" if problem["garbage"] else ""
            click.echo(f"problem: {problem['path']}: {problem['message']}{fix}")
        if not result["problems"]:
            click.echo("the store is consistent")
    if result["problems"]:
        sys.exit(1)
