"""The public names of the package, and the light start-up of the CLI."""

import subprocess
import sys

import pytest

import overlayctl


def test_exported_members():
    assert overlayctl.__all__ == [
        "Change",
        "CheckReport",
        "ContainerRecord",
        "ContainerState",
        "Containers",
        "DiskUsage",
        "HistoryEntry",
        "ImageRecord",
        "ImageRemoval",
        "ImageUsage",
        "Images",
        "LayerRecord",
        "LayerStore",
        "Layers",
        "MountPlan",
        "MountedDir",
        "Mounts",
        "NetworkInfo",
        "OverlayMount",
        "OverlayctlError",
        "Problem",
        "PruneReport",
        "PullReport",
        "PulledLayer",
        "PushReport",
        "PushedBlob",
        "Registries",
        "RunState",
        "Runtime",
        "System",
    ]
    for name in overlayctl.__all__:
        assert getattr(overlayctl, name).__name__ == name


def test_the_store_shows_its_parts():
    """LayerStore is its parts, each a handful of verbs; no verb lives on the store itself."""
    from overlayctl import LayerStore

    verbs = [n for n in vars(LayerStore) if not n.startswith("_") and callable(getattr(LayerStore, n))]
    assert verbs == []
    for part in ("Layers", "Images", "Containers", "Runtime", "Mounts", "System", "Registries"):
        public = [n for n in vars(getattr(overlayctl, part)) if not n.startswith("_")]
        assert 3 <= len(public) <= 14, (part, public)


def test_cli_import_is_light():
    """Importing the CLI and printing its help loads no pyroute2, tarfile or api."""
    code = (
        "import sys, overlayctl.cli as c\n"
        "try:\n    c.cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('pyroute2', 'tarfile', 'overlayctl.api', 'overlayctl.store') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == ""


def _command_paths(group, ctx=None, path=()):
    """Every command under group, depth first, as its path of names: ("system", "df"), ..."""
    import click

    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, path + (name,)
        yield path + (name,)
        if isinstance(command, click.Group):
            yield from _command_paths(command, ctx, path + (name,))


def test_every_command_has_help_with_an_example():
    """Each --help renders an example verbatim: the \\b marker worked (click dropped it, kept the lines)."""
    from click.testing import CliRunner

    from overlayctl.cli import _COMMANDS, cli

    paths = list(_command_paths(cli))
    assert [p[0] for p in paths if len(p) == 1] == list(_COMMANDS)
    for sub in ("df", "prune"):
        assert ("system", sub) in paths
    runner = CliRunner()
    for path in [()] + paths:
        args = list(path) + ["--help"]
        result = runner.invoke(cli, args, prog_name="overlayctl")
        assert result.exit_code == 0, args
        out = result.output
        assert out.startswith(" ".join(("Usage: overlayctl",) + path) + " "), (args, out)
        # A raw docstring leaves "\\b" as text; a stray backspace would mean click missed it.
        assert "\\b" not in out and "\b" not in out, (args, out)
        lines = out.splitlines()
        starts = [i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:")]
        assert starts, (args, out)
        for i in starts:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            # Unwrapped: the example is on its own line, two spaces in from "Example:".
            assert i + 1 < len(lines) and lines[i + 1].startswith(indent + "  overlayctl "), (args, out)


@pytest.mark.parametrize(
    ("args", "debug"),
    [
        (["--debug", "image", "ls"], True),
        (["--root", "/s", "--debug", "ps"], True),
        (["--root", "--debug", "ps"], False),  # "--debug" is the value of --root here
        (["container", "enter", "web", "--", "grep", "--debug"], False),
        (["run", "busybox", "--", "app", "--debug"], False),
    ],
    ids=["first", "after-root", "root-value", "enter-argument", "run-argument"],
)
def test_debug_is_a_global_option_only(args, debug):
    """A container command's own --debug turned on overlayctl's tracebacks."""
    from overlayctl.cli import _wants_debug

    assert _wants_debug(args) is debug
