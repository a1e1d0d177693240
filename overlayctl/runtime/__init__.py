"""Running containers: namespaces, root filesystem, PID 1, cgroups, networking."""
