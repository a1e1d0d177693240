"""The store: owns every path under the root, the lock, transactions, atomic writes and IDs.

- ``layout``: every path; ``lock``: the flock; ``transaction``: journal, rollback
  and roll-forward, trash; ``atomic``: staging, fsync, rename; ``migrate``: older formats.
- ``layers``, ``images``, ``containers``, ``state``, ``network``: the records and
  directories of each kind of object; ``check``: records against directories.

It hands out MountPlans and never mounts anything itself; what it must know of
the kernel (is anything mounted below a directory) its caller tells it.
"""
