"""Model modules (backbone, adapters, detector head). Import submodules directly; nothing is re-exported."""
