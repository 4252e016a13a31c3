"""PodmanEngine.build against a stand-in `podman` script: a layer-cache race is tried again, and
output without newlines comes in bounded pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.engine.base import BuildRequest
from orch.engine.podman import MAX_LINE, PodmanEngine
from orch.errors import EngineError

# Fails its first FAILS builds the way Podman does when an image vanishes during the cache lookup
# (or, with another ERROR, when the cached layer it found goes before the step's container starts).
LOOKUP = (
    "Error: checking if cached image exists from a previous build: getting top layer info: layer not known"
)
FAKE = """#!/bin/sh
count="{dir}/builds"
case "$1" in
  build)
    n=$(cat "$count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$count"
    echo "STEP 1/2: FROM base"
    if [ "$n" -le {fails} ]; then
      echo "{error}"
      exit 125
    fi
    echo "COMMIT t"; exit 0 ;;
  image) echo '[{{"Id": "sha256:abc", "Size": 1, "RepoTags": ["t"]}}]' ;;
esac
"""


def engine(tmp_path: Path, fails: int, error: str = LOOKUP) -> PodmanEngine:
    script = tmp_path / "podman"
    script.write_text(FAKE.format(dir=tmp_path, fails=fails, error=error))
    script.chmod(0o755)
    e = PodmanEngine(binary=str(script))
    e._prepared = True  # no networks for a stand-in
    return e


@pytest.mark.parametrize(
    "error",
    [
        LOOKUP,
        # The faults suite's deployment after a kill: a cached layer removed under the build.
        "Error: creating build container: e4c83a5d1f6b0c2a9e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c: "
        "image not known",
    ],
)
def test_a_cache_race_is_tried_again(tmp_path: Path, error: str) -> None:
    lines: list[str] = []
    info = engine(tmp_path, fails=2, error=error).build(BuildRequest("FROM base\n", "t"), lines.append)
    assert info.id == "sha256:abc"
    assert (tmp_path / "builds").read_text().strip() == "3"
    assert sum("trying again" in line for line in lines) == 2


def test_a_lasting_failure_still_fails(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="podman build failed"):
        engine(tmp_path, fails=5).build(BuildRequest("FROM base\n", "t"), lambda line: None)
    assert (tmp_path / "builds").read_text().strip() == "3"


def test_a_missing_base_image_is_not_tried_again(tmp_path: Path) -> None:
    missing = "Error: creating build container: localhost/nowhere:latest: image not known"
    with pytest.raises(EngineError, match="podman build failed"):
        engine(tmp_path, fails=5, error=missing).build(BuildRequest("FROM base\n", "t"), lambda line: None)
    assert (tmp_path / "builds").read_text().strip() == "1"


LONG = """#!/bin/sh
case "$1" in
  build) echo "STEP 1/2: FROM base"; head -c {size} /dev/zero | tr '\\0' x; echo; echo "COMMIT t" ;;
  image) echo '[{{"Id": "sha256:abc", "Size": 1, "RepoTags": ["t"]}}]' ;;
esac
"""


def test_output_without_newlines_comes_in_bounded_pieces(tmp_path: Path) -> None:
    """A step that prints without a newline (`head -c 4G /dev/zero`) is not read at once."""
    script = tmp_path / "podman"
    size = 5 * MAX_LINE + 123
    script.write_text(LONG.format(size=size))
    script.chmod(0o755)
    e = PodmanEngine(binary=str(script))
    e._prepared = True
    lines: list[str] = []
    e.build(BuildRequest("FROM base\n", "t"), lines.append)
    pieces = [line for line in lines if line.startswith("x")]
    assert len(pieces) == 6 and max(map(len, pieces)) == MAX_LINE
    assert sum(map(len, pieces)) == size and lines[-1] == "COMMIT t"


# `podman ps --external` fails its first FAILS calls the way Podman does when a build's working
# container goes while it lists.
PS = """#!/bin/sh
count="{dir}/lists"
n=$(cat "$count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$count"
if [ "$n" -le {fails} ]; then
  echo "Error: determining buildah container for container 5657: container not known" >&2
  exit 125
fi
echo '[]'
"""


@pytest.mark.parametrize(("fails", "lists"), [(2, "3"), (6, "5")])
def test_listing_a_build_that_goes_meanwhile_is_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: int, lists: str
) -> None:
    import orch.engine.podman as podman

    monkeypatch.setattr(podman, "_release_build_addresses", lambda: None)  # not this machine's
    script = tmp_path / "podman"
    script.write_text(PS.format(dir=tmp_path, fails=fails))
    script.chmod(0o755)
    e = PodmanEngine(binary=str(script))
    if fails < 5:
        assert e.remove_build_leftovers("owner") == 0
    else:
        with pytest.raises(EngineError, match="container not known"):
            e.remove_build_leftovers("owner")
    assert (tmp_path / "lists").read_text().strip() == lists
