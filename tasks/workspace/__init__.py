"""Workspaces: layout, git and DVC versioning, iteration records, crash recovery, atomic writes, provenance."""
