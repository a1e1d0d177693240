"""overlayctl container ...: image + init layer + writable upper."""

from __future__ import annotations

import click

from ._output import (
    config_changes,
    config_options,
    json_option,
    print_json,
    print_table,
    short,
    store_from,
    tags_by_image,
    when,
)

_API = click.Choice(["new", "classic"])


@click.group()
def container() -> None:
    """Create, mount, enter, diff, commit and remove containers.

    \b
    Example:
      overlayctl container create busybox --name web
      overlayctl container mount web
      overlayctl container diff web
    """


@container.command("create")
@click.argument("image")
@click.option("--name", help="A unique name (default: c-<id prefix>).")
@click.option("--hostname", help="Hostname in the init layer (default: the ID prefix).")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    help="Overlay option for its mounts: volatile, userxattr, redirect_dir=, metacopy=, index=, xino=.",
)
@json_option
@click.pass_context
def create(ctx, image: str, name: str | None, hostname: str | None, options: tuple[str, ...], as_json: bool) -> None:
    """Create a container from an image: an init layer, an empty upper.

    \b
    Example:
      overlayctl container create busybox --name web -o volatile
    """
    record = store_from(ctx).containers.create(image, name=name, options=options, hostname=hostname)
    print_json(record.to_json()) if as_json else click.echo(record.name)


@container.command("ls")
@json_option
@click.pass_context
def ls(ctx, as_json: bool) -> None:
    """List containers with their image and mount state.

    \b
    Example:
      overlayctl container ls
    """
    store = store_from(ctx)
    states = store.containers.list()
    if as_json:
        return print_json([s.to_json() for s in states])
    rows = []
    tags_of = tags_by_image(store)
    for s in states:
        tags = tags_of.get(s.record.image)
        image = tags[0] if tags else short(s.record.image)
        rows.append(
            (
                s.record.name,
                short(s.record.id),
                image,
                s.run.describe(),
                s.run.pid or "",
                s.mounted or "no",
                when(s.record.created),
            )
        )
    print_table(["NAME", "ID", "IMAGE", "STATE", "PID", "MOUNTED", "CREATED"], rows)


@container.command("inspect")
@click.argument("ref")
@json_option
@click.pass_context
def inspect(ctx, ref: str, as_json: bool) -> None:
    """Show a container's record, directories and mount plan.

    \b
    Example:
      overlayctl container inspect web --json
    """
    store = store_from(ctx)
    state = store.containers.get(ref)
    plan = store.containers.plan(state.record.id)
    data = {**state.to_json(), "plan": plan.to_json()}
    if state.record.spec.get("argv"):
        data["oci_config"] = store.runtime.spec(state.record.id)
    if as_json:
        return print_json(data)
    for key in ("name", "id", "image", "created", "hostname", "address", "mounted", "pin"):
        click.echo(f"{key + ':':10} {data[key] if data[key] is not None else ''}")
    run = state.run
    click.echo(f"{'state:':10} {run.describe()}" + (f" (pid {run.pid})" if run.pid else ""))
    if run.error:
        click.echo(f"{'error:':10} {run.error}")
    spec = data["spec"]
    if spec.get("argv"):
        click.echo(f"{'command:':10} {' '.join(spec['argv'])}")
        click.echo(f"{'network:':10} {spec.get('network', 'none')}")
    if spec.get("limits"):
        click.echo(f"{'limits:':10} " + ", ".join(f"{k}={v}" for k, v in spec["limits"].items() if v is not None))
    if "oci_config" in data:
        click.echo(f"{'profile:':10} {_profile_summary(data['oci_config'])}")
    if run.cgroup:
        click.echo(f"{'cgroup:':10} " + ", ".join(sorted(run.cgroup.get("paths", {}).values())))
    if run.status == "exited":
        click.echo(f"{'oom:':10} {'killed by the OOM killer' if run.oom_killed else 'no'}")
    click.echo(f"{'options:':10} {','.join(data['plan']['options'])}")
    click.echo(f"{'target:':10} {plan.target}")
    click.echo(f"{'upper:':10} {plan.upper}")
    click.echo(f"{'work:':10} {plan.work}")
    click.echo("lowers (top first):")
    for path, label in zip(plan.lowers, plan.labels):
        click.echo(f"  {label:20} {path}")


def _profile_summary(config: dict) -> str:
    """One line: capabilities, seccomp, masked paths, as the OCI config decides them."""
    process, linux = config["process"], config["linux"]
    seccomp = linux.get("seccomp")
    parts = [
        f"{len(process['capabilities']['bounding'])} capabilities",
        f"seccomp ({len(seccomp['syscalls'])} rules)" if seccomp else "no seccomp",
        f"{len(linux.get('maskedPaths', []))} masked paths",
        "no-new-privileges" if process.get("noNewPrivileges") else "",
        "read-only root" if config["root"].get("readonly") else "",
        "user namespace" if linux.get("uidMappings") else "",
    ]
    return ", ".join(p for p in parts if p)


@container.command("spec")
@click.argument("ref")
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False), help="Write DIR/config.json.")
@click.pass_context
def spec(ctx, ref: str, directory: str | None) -> None:
    """Print a container's OCI runtime config (config.json), or write it as a bundle.

    The config is the one the container last ran with (else the one it
    would run with). Its root is the container's overlay: mount it with
    'overlayctl container mount' before running the bundle by hand.

    \b
    Example:
      overlayctl container spec web -o /tmp/web && runc run -b /tmp/web web
    """
    config = store_from(ctx).runtime.spec(ref)
    if directory is None:
        return print_json(config)
    import json
    import os

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    click.echo(os.path.join(directory, "config.json"))


@container.command("cleanup", hidden=True)
@click.argument("ref")
@click.pass_context
def cleanup(ctx, ref: str) -> None:
    """Release what an exited container held (conmon calls this when it ends).

    \b
    Example:
      overlayctl container cleanup 3f2a9c
    """
    store_from(ctx).runtime.cleanup(ref)


@container.command("mount")
@click.argument("ref")
@click.option("--host", is_flag=True, help="Mount in the caller's namespace instead of a new one.")
@click.option("--api", type=_API, help="Force the mount API (default: new where the kernel has lowerdir+).")
@click.pass_context
def mount(ctx, ref: str, host: bool, api: str | None) -> None:
    """Mount a container's overlay at its merged/ directory.

    By default the mount lives in a new mount namespace, pinned under the
    run root, invisible to the host; 'container enter' goes inside.

    \b
    Example:
      overlayctl container mount web
      overlayctl container mount web --host
    """
    from ..kernel.mount import MountApi

    store = store_from(ctx)
    state = store.containers.mount(ref, host=host, api=MountApi(api) if api else None)
    click.echo(store.layout.merged(state.record.id))


@container.command("unmount")
@click.argument("ref")
@click.pass_context
def unmount(ctx, ref: str) -> None:
    """Unmount a container (either kind of mount) and drop its namespace pin.

    \b
    Example:
      overlayctl container unmount web
    """
    if not store_from(ctx).containers.unmount(ref):
        click.echo(f"{ref} was not mounted", err=True)


@container.command("enter", context_settings={"ignore_unknown_options": True})
@click.argument("ref")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def enter(ctx, ref: str, command: tuple[str, ...]) -> None:
    """Run COMMAND (default: a shell) in the container's mount namespace, in merged/.

    \b
    Example:
      overlayctl container enter web -- ls -l bin
    """
    store_from(ctx).containers.enter(ref, command)


@container.command("diff")
@click.argument("ref")
@json_option
@click.pass_context
def diff(ctx, ref: str, as_json: bool) -> None:
    """List added (A), changed (C) and deleted (D) paths, like 'docker diff'.

    \b
    Example:
      overlayctl container diff web
    """
    changes = store_from(ctx).containers.diff(ref)
    if as_json:
        return print_json([c.to_json() for c in changes])
    for change in changes:
        click.echo(f"{change.kind} {change.path}")


@container.command("commit")
@click.argument("ref")
@click.argument("tag", required=False)
@click.option("-m", "--message", default="", help="Comment for the new layer.")
@config_options
@json_option
@click.pass_context
def commit(ctx, ref: str, tag: str | None, message: str, as_json: bool, **options) -> None:
    """Turn a container's upper into a new layer and image; the old image stays.

    \b
    Example:
      overlayctl container commit web busybox:v2 -m "add index.html"
    """
    record = store_from(ctx).containers.commit(ref, tag=tag, message=message, changes=config_changes(options))
    print_json({"id": record.id, "tag": tag, "layers": record.layers}) if as_json else click.echo(record.id)


@container.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Unmount first if mounted.")
@click.pass_context
def rm(ctx, refs: tuple[str, ...], force: bool) -> None:
    """Remove containers: unmount (-f), drop the pin, delete their directories.

    \b
    Example:
      overlayctl container rm -f web
    """
    store = store_from(ctx)
    for ref in refs:
        click.echo(store.runtime.remove(ref, force=force).name)
