"""The thin kernel layer: system calls, namespaces and feature probes.

It carries out MountPlans and never decides what to mount.
"""
