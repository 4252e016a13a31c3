"""The launcher's cache of image roots (sandbox/rootfs.Images), against a fake `podman`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from orch.sandbox.rootfs import Images

FAKE = """#!/bin/sh
echo "$@" >> {log}
case "$1 $2" in
  "info --format") echo "{graph} overlay" ;;
  "image inspect") sleep 0.2; echo '[{{"Id": "sha256:abc", "Config": {{"Env": ["A=1"], "User": "1000"}}}}]' ;;
  "image mount") echo / ;;
esac
"""


def fake_podman(tmp_path: Path) -> tuple[Path, Path, Path]:
    log, graph = tmp_path / "calls", tmp_path / "graph"
    (graph / "overlay-images").mkdir(parents=True)
    index = graph / "overlay-images" / "images.json"
    index.write_text("[]")
    script = tmp_path / "podman"
    script.write_text(FAKE.format(log=log, graph=graph))
    script.chmod(0o755)
    return script, log, index


def calls(log: Path, what: str) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.startswith(what))


def test_runs_that_find_the_cache_stale_together_wait_for_one_inspect(tmp_path: Path) -> None:
    script, log, index = fake_podman(tmp_path)
    images = Images(str(script))
    found: list[str] = []

    def get() -> None:
        found.append(images.get("localhost/x:1").id)

    for _round in range(2):  # the first look, then again after Podman's image list changed
        threads = [threading.Thread(target=get) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.01)
        index.write_text("[ ]")  # a new mtime: the next round finds the cache stale
    assert found == ["sha256:abc"] * 16
    assert calls(log, "image inspect") == 2  # one per round, not one per run
    assert calls(log, "image mount") == 1  # the same image id: its mounted root is kept
    assert images.get("localhost/x:1").env == ("A=1",) and calls(log, "image inspect") == 3


def test_a_missing_image_is_said_so_not_blamed_on_the_setup(tmp_path: Path) -> None:
    """Podman's "image not known" means the image went (`podman rmi`), not a server set up wrong:
    the message says which image is missing, and its fix is not "run the server as root"."""
    import pytest

    from orch.errors import EngineError

    script, _, _ = fake_podman(tmp_path)
    gone = 'echo "Error: inspecting object: localhost/x:1: image not known" >&2; exit 125'
    lines = script.read_text().splitlines()
    script.write_text(
        "\n".join(f'  "image inspect") {gone} ;;' if "image inspect" in x else x for x in lines)
    )
    with pytest.raises(EngineError) as missing:
        Images(str(script)).get("localhost/x:1")
    assert missing.value.message == "The image localhost/x:1 is missing."
    assert "root" not in missing.value.fix
