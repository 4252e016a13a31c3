"""The running platform's parts, handed to every use case."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from orch.config import Config
from orch.engine.base import Engine
from orch.store import Store


@dataclass
class Platform:
    config: Config
    store: Store
    engine: Engine
    # Set when work is queued, so workers wake at once instead of at their next poll.
    wake_builds: threading.Event = field(default_factory=threading.Event)
    wake_runs: threading.Event = field(default_factory=threading.Event)
    # Notified whenever a run writes output or changes state, for long-polling readers.
    run_output: threading.Condition = field(default_factory=threading.Condition)

    @property
    def instance(self) -> str:
        """Short id of this platform (its ORCH_HOME): every image and container carries it."""
        return hashlib.sha256(str(self.config.home).encode()).hexdigest()[:12]

    @property
    def labels(self) -> dict[str, str]:
        return {"org.orch.instance": self.instance, "org.orch.home": str(self.config.home)}

    def run_dir(self, run_id: str) -> Path:
        path = self.config.home / "logs" / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def notify_runs(self) -> None:
        with self.run_output:
            self.run_output.notify_all()

    @property
    def build_logs(self) -> Path:
        path = self.config.home / "logs" / "builds"
        path.mkdir(parents=True, exist_ok=True)
        return path
