"""A service's output: each container writes a k8s-file log; when a container ends, its output
moves to the service's history. History + the current container's output only ever grow, so a
reader follows them with one byte offset."""

from __future__ import annotations

from pathlib import Path

from orch.services.platform import Platform

MAX_HISTORY = 4 * 1024 * 1024  # kept per service; older output is dropped from the front
# A container's log file starts afresh when it reaches this (Podman's k8s-file `max-size`), so
# a chatty or hostile service cannot fill the disk, nor make each read of its logs grow.
MAX_CONTAINER_LOG = 8 * 1024 * 1024
TAIL_LINES = 40


def directory(platform: Platform, service_id: str) -> Path:
    path = platform.config.home / "logs" / "services" / service_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def container_log(platform: Platform, service_id: str, container: str) -> Path:
    return directory(platform, service_id) / f"{container}.log"


def parse(raw: str) -> str:
    """The text of a k8s-file log: `TIMESTAMP STREAM F|P TEXT` per line (P: a partial line)."""
    out: list[str] = []
    for line in raw.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else ""
        out.append(text if parts[2] == "P" else text + "\n")
    return "".join(out)


def read_container(platform: Platform, service_id: str, container: str | None) -> str:
    if not container:
        return ""
    try:
        return parse(container_log(platform, service_id, container).read_text(errors="replace"))
    except FileNotFoundError:
        return ""


def archive(platform: Platform, service_id: str, container: str) -> str:
    """Move an ended container's output to the history; return its last lines."""
    text = read_container(platform, service_id, container)
    history = directory(platform, service_id) / "history.log"
    with history.open("a") as f:
        f.write(text)
    if history.stat().st_size > MAX_HISTORY:
        data = history.read_bytes()[-MAX_HISTORY // 2 :]
        history.write_bytes(data)
    container_log(platform, service_id, container).unlink(missing_ok=True)
    return tail(text)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "".join(text.splitlines(keepends=True)[-lines:])


def read(platform: Platform, service_id: str, container: str | None, offset: int) -> tuple[str, int]:
    """Output from byte `offset` of history + current container; return it and the new offset."""
    try:
        history = (directory(platform, service_id) / "history.log").read_bytes()
    except FileNotFoundError:
        history = b""
    data = history + read_container(platform, service_id, container).encode()
    if offset > len(data):
        # The container's log started afresh at its size limit (or the history was trimmed and
        # a new container began): go on from the start of the container's output.
        offset = len(history)
    chunk = data[offset:]
    return chunk.decode("utf-8", "replace"), offset + len(chunk)
