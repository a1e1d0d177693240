"""The overlayctl command line: the root group, global options, error display.

Subcommands load lazily, so ``overlayctl --help`` imports none of them.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ..errors import OverlayctlError

_COMMANDS = {
    "layer": ("layer", "layer", "Create, list, export and remove read-only layers."),
    "image": ("image", "image", "Import, list, tag, inspect and remove images."),
    "container": ("container", "container", "Create, mount, enter, diff, commit and remove containers."),
    "run": ("run", "run", "Run a command in a new container."),
    "start": ("run", "start", "Start a container in the background."),
    "stop": ("run", "stop", "Stop a running container (SIGTERM, then SIGKILL)."),
    "exec": ("run", "exec_", "Run a command inside a running container."),
    "ps": ("run", "ps", "List containers with their state and PID."),
    "logs": ("run", "logs", "Print a detached container's output."),
    "rm": ("container", "rm", "Remove containers (same as 'container rm')."),
    "pull": ("registry", "pull", "Pull an image from a registry."),
    "push": ("registry", "push", "Push an image to a registry."),
    "login": ("registry", "login", "Log in to a registry (Docker's config.json)."),
    "logout": ("registry", "logout", "Forget the credentials of a registry."),
    "network": ("network", "network", "Show or set the bridge network's name and subnet."),
    "mounts": ("mounts", "mounts", "Show overlay mounts and which store layer each directory is."),
    "check": ("check", "check", "Check the store's records against its directories (--repair)."),
    "system": ("system", "system", "Disk usage of the store (df), and removing what nothing uses (prune)."),
    "info": ("info", "info", "Show kernel overlay support and the store's filesystem."),
    "mount": ("union", "mount", "Union-mount plain directories (first --lower on top)."),
    "umount": ("union", "umount", "Unmount a union made by 'overlayctl mount'."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when run or asked for help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, not from the modules: keeps --help light.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, _, text) in _COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="OVERLAYCTL_ROOT", help="Store root [default: /var/lib/overlayctl].")
@click.option("--run-root", envvar="OVERLAYCTL_RUN_ROOT", help="Runtime state [default: /run/overlayctl].")
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="OVERLAYCTL_LOCK_TIMEOUT",
    help="Seconds to wait for another process's change to the store.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option("0.1.0", prog_name="overlayctl")
@click.pass_context
def cli(ctx: click.Context, root: str | None, run_root: str | None, lock_timeout: float, debug: bool) -> None:
    """overlayctl: a layer store and overlay mount orchestrator.

    \b
    Example:
      overlayctl image import ./rootfs --tag base
      overlayctl container create base --name web
      overlayctl container mount web
      overlayctl container enter web -- ls
    """
    ctx.obj = {"root": root, "run_root": run_root, "lock_timeout": lock_timeout, "debug": debug}


def _wants_debug(args: list[str]) -> bool:
    """Whether --debug is among the global options (a container's own --debug is not ours)."""
    with_value = {"--root", "--run-root", "--lock-timeout"}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--debug":
            return True
        i += 2 if args[i] in with_value else 1
    return False


def _show_warnings_as_one_line() -> None:
    """A warning (a damaged record a listing skipped) is one ``warning:`` line on stderr."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning our errors (and any OSError) into one line on stderr."""
    args = sys.argv[1:] if argv is None else argv
    debug = _wants_debug(args) or bool(os.environ.get("OVERLAYCTL_DEBUG"))
    _show_warnings_as_one_line()
    try:
        cli.main(args=args, prog_name="overlayctl", standalone_mode=False)
    except (OverlayctlError, OSError) as exc:
        from ..errors import from_oserror  # an OSError no call site translated: the same boundary

        error = from_oserror(exc) if isinstance(exc, OSError) else exc
        if debug:
            import traceback

            traceback.print_exc()
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
