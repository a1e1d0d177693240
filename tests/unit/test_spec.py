"""RunSpec: image config merged with the flags of run, as Docker merges them."""

import pytest

from overlayctl.errors import InvalidArgument
from overlayctl.runtime.spec import DEFAULT_PATH, RunSpec, Volume, build_spec, merge_env, parse_command, runtime_changes

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["A=1", "PATH=/bin"], "WorkingDir": "/app", "User": "app"}


@pytest.mark.parametrize(
    "config, command, argv",
    [
        (IMAGE, (), ("/entry", "serve")),
        (IMAGE, ("debug", "-v"), ("/entry", "debug", "-v")),
        ({"Cmd": ["sh"]}, (), ("sh",)),
        ({"Cmd": ["sh"]}, ("echo", "hi"), ("echo", "hi")),
    ],
    ids=["image-defaults", "args-after-entrypoint", "cmd-only", "command-replaces-cmd"],
)
def test_argv(config, command, argv):
    assert build_spec(config, command=command).argv == argv


def test_flags_override_the_image():
    spec = build_spec(IMAGE, env=["A=2", "B=3"], workdir="/tmp", user="0:0", network="bridge", auto_remove=True)
    assert spec.env == ("A=2", "PATH=/bin", "B=3")
    assert (spec.workdir, spec.user, spec.network, spec.auto_remove) == ("/tmp", "0:0", "bridge", True)
    assert RunSpec.from_json(spec.to_json()) == spec


def test_default_path():
    assert merge_env([], ["X=1"]) == ("X=1", f"PATH={DEFAULT_PATH}")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"command": ()}, "no command"),
        ({"command": ("x",), "network": "nat"}, "--network"),
        ({"command": ("x",), "workdir": "rel"}, "absolute"),
        ({"command": ("x",), "env": ["=x"]}, "environment"),
        ({"command": ("x",), "user": "a:b:c"}, "--user"),
        ({"command": ("x",), "volumes": ["/a"]}, "--volume"),
    ],
    ids=["no-command", "network", "workdir", "env", "user", "volume"],
)
def test_bad_flags(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        build_spec({}, **kwargs)


@pytest.mark.parametrize(
    "text, volume",
    [
        ("/srv:/data", Volume("/srv", "/data", False)),
        ("/srv:/data:ro", Volume("/srv", "/data", True)),
        ("/srv:/data/./x:rw", Volume("/srv", "/data/x", False)),
    ],
    ids=["rw", "ro", "normalised"],
)
def test_volume_parse(text, volume):
    assert Volume.parse(text) == volume


@pytest.mark.parametrize(
    "text", ["/srv", "/srv:data", "/srv:/a/../b", "/srv:/d:rx"], ids=["one", "relative", "dotdot", "mode"]
)
def test_volume_refused(text):
    with pytest.raises(InvalidArgument):
        Volume.parse(text)


def test_commands_and_changes():
    assert parse_command('["sh", "-c", "echo hi"]') == ["sh", "-c", "echo hi"]
    assert parse_command("sh -c 'echo hi'") == ["sh", "-c", "echo hi"]
    changed = runtime_changes(cmd="top", env=["A=9"], workdir="/w", base={"Env": ["A=1", "B=2"], "Cmd": ["sh"]})
    assert changed == {"Env": ["A=9", "B=2"], "Cmd": ["top"], "WorkingDir": "/w"}
    with pytest.raises(InvalidArgument):
        parse_command("[not json")
