"""overlayctl check: the store's records against its directories."""

from __future__ import annotations

import sys

import click

from ._output import json_option, print_json, store_from


@click.command()
@click.option(
    "--repair",
    is_flag=True,
    help="Fix what is safe to: finish an interrupted transaction, remove garbage, restore short links.",
)
@click.option("--verify-content", is_flag=True, help="Also re-hash every layer's files (reads the whole store).")
@json_option
@click.pass_context
def check(ctx, repair: bool, verify_content: bool, as_json: bool) -> None:
    """Check the store; exit 1 if anything is wrong that --repair did not fix.

    \b
    Example:
      overlayctl check --repair
    """
    report = store_from(ctx).system.check(repair=repair, verify_content=verify_content)
    if as_json:
        print_json(report.to_json())
    else:
        for problem in report.repaired:
            click.echo(f"repaired: {problem.path}: {problem.message}")
        for problem in report.problems:
            fix = f" (--repair: {problem.repair})" if problem.repair else ""
            click.echo(f"problem: {problem.path}: {problem.message}{fix}")
        if not report.problems:
            click.echo("the store is consistent")
    if report.problems:
        sys.exit(1)
