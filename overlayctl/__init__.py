"""overlayctl: a layer store and overlayfs mount orchestrator for Linux."""
