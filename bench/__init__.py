"""overlayctl benchmarks: mount times against the kernel's own floor, run against Docker.

Run as root from the repository root: ``make bench`` or
``.venv/bin/python -m bench [--only FAMILY[,FAMILY]] [--reps N]``.  Prints
a table of median times per family and writes the same figures to
``bench/results.json``.  Slow numbers are reported, never fatal: the exit
status is 0 unless a benchmark itself breaks.

Modules: ``harness`` (timing: samples, side-by-side rounds, medians,
ratios), ``results`` (the table, the goals, the JSON), ``context`` (the
temp dir, the stores, the busybox rootfs, the CLI, cleanup), ``rawmount``
(the kernel's own mount, the yardstick), one module per family (``floor``,
``api``, ``cli_mount``, ``cli_help``, ``busybox``, ``run``) and
``__main__`` (options, order, cleanup).  Docker and the busybox rootfs come
from ``testkit``, shared with the tests.
"""
