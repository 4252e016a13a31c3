"""Images in an OCI registry: what a build made here is pushed there, and a machine that lacks
it pulls it by digest (docs/registry.md).

A local image's remote name keeps its repository path and tag under the registry the `registry`
setting names: localhost/orch-env/abc:key -> REGISTRY/orch-env/abc:key. What the platform
records is the digest reference the push returns, REGISTRY/orch-env/abc@sha256:...: it names
those bytes and no others, whatever the tag names later. A machine pulls by it and tags the
image with its local name again, so everything that names the image by its tag works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from orch.config import Config
from orch.engine.base import Engine, ImageInfo
from orch.errors import EngineError


def remote_name(registry: str, image: str) -> str:
    """The name the local image `image` has in `registry` (HOST[:PORT][/PATH]): its path and
    tag under the registry, in place of its own registry part (`localhost`, for orch's images)."""
    first, slash, rest = image.partition("/")
    # As image references are read: a first component with a dot or a port, or `localhost`, is
    # a registry; anything else is a path on the default one.
    path = rest if slash and ("." in first or ":" in first or first == "localhost") else image
    return f"{registry.rstrip('/')}/{path}"


def push(engine: Engine, config: Config, image: str) -> str | None:
    """Push the local image `image` to the configured registry and return its digest reference
    (REPOSITORY@sha256:...); None when no registry is set. Raise EngineError."""
    if not config.registry:
        return None
    return engine.push_image(image, remote_name(config.registry, image), config.registry_tls_verify)


def push_built(engine: Engine, config: Config, image: str, out: Callable[[str], None]) -> str | None:
    """`push`, saying so in a build's or a deployment's log (`out`). Raise EngineError."""
    if not config.registry:
        return None
    out(f"Pushing {remote_name(config.registry, image)}")
    digest = push(engine, config, image)
    out(f"Pushed {digest}")
    return digest


def ensure_image(engine: Engine, config: Config, image: str, digest_ref: str | None) -> ImageInfo:
    """Make sure the engine has `image` (a local tag): there already, nothing is done; else it is
    pulled by `digest_ref` and tagged `image`. Raise EngineError when it is neither."""
    info = engine.inspect_image(image)
    if info is not None:
        return info
    if not digest_ref:
        raise EngineError(
            f"The image {image} is not on this machine, and no registry copy of it is recorded.",
            "Build it again (set ORCH_REGISTRY on every machine first, so that what is built is "
            "pushed and other machines can pull it).",
        )
    return engine.pull_image(digest_ref, image, config.registry_tls_verify)
