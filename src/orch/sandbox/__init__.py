"""Runs: the sandbox a run gets (spec, limits, mounts) and its cached dependencies."""
