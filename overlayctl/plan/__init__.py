"""Pure planning: what to mount and with which options; parsing of mountinfo.

Nothing in this package makes a system call.
"""
