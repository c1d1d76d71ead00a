"""Reports computed from a run directory's files."""
