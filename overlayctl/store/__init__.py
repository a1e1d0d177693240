"""The store: owns every path under the root, the lock, atomic writes and IDs.

It hands out MountPlans and never mounts anything itself.
"""
