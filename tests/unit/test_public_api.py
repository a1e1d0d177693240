"""The public names of the package, and the light start-up of the CLI."""

import subprocess
import sys

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
    for part in ("Layers", "Images", "Containers", "Runtime", "Mounts", "System"):
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


def test_every_command_has_help_with_an_example():
    from click.testing import CliRunner

    from overlayctl.cli import _COMMANDS, cli

    runner = CliRunner()
    for name in _COMMANDS:
        command = cli.get_command(None, name)
        subs = list(command.commands) if hasattr(command, "commands") else [None]
        for sub in subs:
            args = [name] + ([sub] if sub else []) + ["--help"]
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, args
            assert "Example" in result.output, args
