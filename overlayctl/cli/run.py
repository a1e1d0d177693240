"""overlayctl run / start / stop / exec / ps / logs: running containers."""

from __future__ import annotations

import sys

import click

from ._output import json_option, print_json, print_table, short, store_from, tags_by_image, when

_COMMAND = click.argument("command", nargs=-1, type=click.UNPROCESSED)


def _strip_dashes(command: tuple[str, ...]) -> tuple[str, ...]:
    """IMAGE -- CMD: options stop at IMAGE, so a "--" after it arrives as an argument."""
    return command[1:] if command[:1] == ("--",) else command


@click.command(context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False})
@click.option("--rm", "remove", is_flag=True, help="Remove the container when it exits.")
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the name.")
@click.option("--name", help="A unique name.")
@click.option("--hostname", help="The container's hostname (default: its ID prefix).")
@click.option("-e", "--env", multiple=True, help="Set KEY=VALUE (repeatable).")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option("-u", "--user", help="UID[:GID] or NAME[:GROUP] to run as.")
@click.option("-v", "--volume", "volumes", multiple=True, help="Bind mount HOST:CONTAINER[:ro] (repeatable).")
@click.option("--network", type=click.Choice(["none", "host", "bridge"]), default="none", show_default=True)
@click.option("-m", "--memory", help="Memory limit, e.g. 64m, 1g.")
@click.option("--pids-limit", type=int, help="Maximum number of processes.")
@click.option("--cpus", help="CPU quota, e.g. 0.5.")
@click.option("-i", "--interactive", is_flag=True, help="Pass stdin through.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal (with -i: an interactive shell).")
@click.option("--init", is_flag=True, help="Run a tiny init (tini) as PID 1 in front of the command.")
@click.option("--cap-add", multiple=True, metavar="CAP", help="Add a capability (NET_ADMIN, ..., ALL).")
@click.option("--cap-drop", multiple=True, metavar="CAP", help="Drop a capability (CHOWN, ..., ALL).")
@click.option("--privileged", is_flag=True, help="All capabilities and devices, no seccomp, no masked paths.")
@click.option(
    "--security-opt", multiple=True, metavar="OPT", help="seccomp=PATH, seccomp=unconfined or no-new-privileges."
)
@click.option("--device", "devices", multiple=True, metavar="HOST[:CTR][:rwm]", help="Give a host device.")
@click.option("--read-only", is_flag=True, help="Mount the container's root read-only.")
@click.option("--tmpfs", multiple=True, metavar="PATH", help="Mount a tmpfs at PATH (repeatable).")
@click.option(
    "--userns", type=click.Choice(["host", "auto"]), default="host", help="auto: a user namespace of its own."
)
@click.option(
    "--runtime", default="", metavar="NAME|PATH", help="OCI runtime (default: crun if it works here, else runc)."
)
@click.argument("image")
@_COMMAND
@click.pass_context
def run(ctx, image: str, command: tuple[str, ...], **options) -> None:
    """Run COMMAND (default: the image's Entrypoint and Cmd) in a new container.

    overlayctl mounts the overlay in a mount namespace of its own and hands
    the container to an OCI runtime (runc or crun), watched by conmon. The
    command runs as PID 1 in its own mount, PID, UTS, IPC, cgroup and
    network namespaces with Docker's default profile: 14 capabilities,
    a seccomp filter, masked /proc paths and only the usual devices.
    Its exit code is overlayctl's.

    \b
    Example:
      overlayctl run --rm busybox -- echo hi
      overlayctl run --rm -it busybox sh
      overlayctl run --rm --memory 64m --network bridge busybox -- ip addr
      overlayctl run --rm --cap-add NET_ADMIN busybox -- ip link set lo mtu 1400
    """
    store = store_from(ctx)
    detach = options.pop("detach")
    options["userns"] = "" if options["userns"] == "host" else options["userns"]
    record = store.runtime.create(image, _strip_dashes(command), **options)
    if detach:
        store.runtime.start(record.id)
        click.echo(record.name)
        return
    sys.exit(store.runtime.start(record.id, attach=True))


@click.command()
@click.argument("ref")
@click.pass_context
def start(ctx, ref: str) -> None:
    """Start a container in the background; its output goes to 'overlayctl logs'.

    \b
    Example:
      overlayctl start web
    """
    store_from(ctx).runtime.start(ref)


@click.command()
@click.option("-t", "--time", "timeout", type=float, default=10.0, show_default=True, help="Seconds before SIGKILL.")
@click.argument("ref")
@click.pass_context
def stop(ctx, ref: str, timeout: float) -> None:
    """Stop a running container: SIGTERM, then SIGKILL after --time seconds.

    \b
    Example:
      overlayctl stop -t 2 web
    """
    if not store_from(ctx).runtime.stop(ref, timeout=timeout):
        click.echo(f"{ref} was not running", err=True)


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Pass stdin through.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal.")
@click.argument("ref")
@_COMMAND
@click.pass_context
def exec_(ctx, ref: str, command: tuple[str, ...], interactive: bool, tty: bool) -> None:
    """Run COMMAND inside a running container, with the container's user, env and profile.

    \b
    Example:
      overlayctl exec web -- ps
      overlayctl exec -it web sh
    """
    sys.exit(store_from(ctx).runtime.exec(ref, _strip_dashes(command), interactive=interactive, tty=tty))


@click.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all containers, not only running ones.")
@json_option
@click.pass_context
def ps(ctx, show_all: bool, as_json: bool) -> None:
    """List running containers (-a: all) with state and PID.

    \b
    Example:
      overlayctl ps -a
    """
    store = store_from(ctx)
    states = [s for s in store.containers.list() if show_all or s.run.status == "running"]
    if as_json:
        return print_json([s.to_json() for s in states])
    rows = []
    tags_of = tags_by_image(store)
    for s in states:
        tags = tags_of.get(s.record.image)
        command = " ".join(s.record.spec.get("argv", []))
        rows.append(
            (
                s.record.name,
                short(s.record.id),
                tags[0] if tags else short(s.record.image),
                command[:30],
                s.run.describe(),
                s.run.pid or "",
                when(s.record.created),
            )
        )
    print_table(["NAME", "ID", "IMAGE", "COMMAND", "STATE", "PID", "CREATED"], rows)


@click.command()
@click.argument("ref")
@click.pass_context
def logs(ctx, ref: str) -> None:
    """Print the output of a detached container.

    \b
    Example:
      overlayctl logs web
    """
    path = store_from(ctx).runtime.log_path(ref)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(65536):
                sys.stdout.buffer.write(chunk)
    except FileNotFoundError:
        pass
