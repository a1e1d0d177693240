"""``python -m bench``: the options, the families in order, cleanup, the summary and results.json.

Families run in a fixed order (the floor first: the other families' rows
show their ratio to it when it ran), each with its own repetition counts
unless ``--reps`` sets one for all.  A family that breaks is reported and
the others still run; the exit status is then 1.  Missed goals never fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType, ModuleType

from . import api, busybox, cli_help, cli_mount, floor, images, registry, run
from .context import Bench
from .results import Results

FAMILIES: dict[str, ModuleType] = {
    module.NAME: module for module in (floor, api, cli_mount, cli_help, busybox, run, images, registry)
}
NO_ROOT = {cli_help.NAME}  # families that mount nothing
RESULTS = Path(__file__).resolve().parent / "results.json"


def family_list(text: str) -> list[str]:
    """--only's value: comma-separated family names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown family {', '.join(unknown) or text!r}; one of {', '.join(FAMILIES)}")
    return names


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    families = "\n".join(f"  {name:9} {module.SUMMARY}" for name, module in FAMILIES.items())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="overlayctl benchmarks (as root): median times, ratios to the kernel's floor and to docker.",
        epilog=f"families, in the order they run:\n{families}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only", metavar="FAMILY[,FAMILY]", type=family_list, action="extend", help="run only these families"
    )
    parser.add_argument(
        "--reps", metavar="N", type=positive, help="timed repetitions of every benchmark (default: each family's own)"
    )
    return parser.parse_args(argv)


def compile_package() -> None:
    """Compile overlayctl's bytecode, as installing a package does: the CLI runs never pay for compiling.

    The environment may say PYTHONDONTWRITEBYTECODE, and a source edited since
    the last run would otherwise be compiled again by every command timed.
    """
    import compileall

    import overlayctl

    compileall.compile_dir(os.path.dirname(overlayctl.__file__), quiet=1)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, through main's cleanup."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [name for name in FAMILIES if args.only is None or name in args.only]
    if os.geteuid() != 0:
        skipped = [name for name in chosen if name not in NO_ROOT]
        if skipped:
            print(f"bench: skipped {', '.join(skipped)}: overlay mounts need root (run 'make bench' as root)")
        chosen = [name for name in chosen if name in NO_ROOT]
        if not chosen:
            return 0
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    print(f"overlayctl bench: Linux {platform.release()}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"families: {', '.join(chosen)}; " + (f"{args.reps} runs each" if args.reps else "medians of 20-100 runs"))
    print("N = the image's layers; a container adds its init layer (N = 500: an image of 499 layers)")
    compile_package()
    ctx = Bench()
    results = Results()
    broken: list[str] = []
    try:
        for name in chosen:
            try:
                FAMILIES[name].measure(ctx, results, args.reps)
            except Exception:
                traceback.print_exc()
                print(f"bench: family {name} broke; going on with the others", file=sys.stderr)
                broken.append(name)
    except KeyboardInterrupt:
        print("\nbench: interrupted", file=sys.stderr)
        return 130
    finally:
        ctx.cleanup()
    results.print_summary()
    RESULTS.write_text(json.dumps(results.to_json(chosen, args.reps), indent=2) + "\n")
    shown = RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS
    print(f"\nwrote {shown} ({time.perf_counter() - started:.0f} s)")
    if broken:
        print(f"bench: broken: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
