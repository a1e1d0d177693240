"""A container's run state on disk: created, running or exited, and its pids."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .atomic import write_atomic
from .layout import StoreLayout
from .records import dump_json, load_json, now_rfc3339

#: The error of a container whose monitor died before it said how the container ended;
#: the next verb that changes state reaps it.
DEAD_MONITOR = "its monitor died"


@dataclass(frozen=True, slots=True)
class RunState:
    """What the monitor of a container last wrote.

    ``pid`` is the container's PID 1 as the host sees it; ``monitor`` the
    overlayctl process that waits for it, with its start time (clock ticks
    since boot, from /proc/PID/stat) so a reused pid is never mistaken for it.
    """

    status: str = "created"  # created | running | exited
    pid: int | None = None
    pid_start: int | None = None
    monitor: int | None = None
    monitor_start: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    started: str = ""
    finished: str = ""
    error: str = ""
    cgroup: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    detached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def running(self, **changes: Any) -> RunState:
        return replace(
            self,
            status="running",
            started=now_rfc3339(),
            finished="",
            exit_code=None,
            oom_killed=False,
            error="",
            **changes,
        )

    def exited(self, exit_code: int | None, **changes: Any) -> RunState:
        return replace(
            self,
            status="exited",
            finished=now_rfc3339(),
            exit_code=exit_code,
            pid=None,
            pid_start=None,
            monitor=None,
            monitor_start=None,
            **changes,
        )

    def describe(self) -> str:
        """Like docker ps: "running", "exited (0)", "created"."""
        if self.status == "exited":
            code = "?" if self.exit_code is None else self.exit_code
            return f"exited ({code})" + (" oom" if self.oom_killed else "")
        return self.status


def read_state(layout: StoreLayout, container_id: str) -> RunState:
    try:
        return RunState.from_json(load_json(layout.state_json(container_id)))
    except FileNotFoundError:
        return RunState()


def write_state(layout: StoreLayout, container_id: str, state: RunState) -> None:
    write_atomic(layout.state_json(container_id), dump_json(state.to_json()))


def monitor_exit_code(layout: StoreLayout, container_id: str) -> int | None:
    """The exit code conmon wrote for the container's PID 1, if it did."""
    try:
        with open(f"{layout.monitor_dir(container_id)}/exit") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
