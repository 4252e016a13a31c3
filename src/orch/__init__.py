"""orch: run AI agents in isolated sandboxes, in environments each workspace shapes."""

__version__ = "0.1.0"
