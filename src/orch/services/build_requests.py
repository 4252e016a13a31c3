"""A build asked for: an image with the same cache key is reused at once, else the build is
queued for a worker. What the engine knows (the base image, which cached images still exist) is
looked up first, outside the store's transaction, so that no transaction waits on Podman."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch import dockerfile, metrics
from orch.builder import base_images
from orch.builder.cache import cache_key, dockerfile_hash
from orch.models import SHARED, BuildStatus, advance, new_id
from orch.services.platform import Platform
from orch.store.schema import BuildRow, EnvironmentRow, utcnow


@dataclass(frozen=True)
class CachedImage:
    """A ready build's image that the engine still has."""

    environment_id: str
    image: str
    size_bytes: int | None
    containerfile: str
    image_digest: str | None = None  # where it is in the registry, if it was pushed


@dataclass(frozen=True)
class Lookup:
    """What the engine said about a Dockerfile's build: its cache key, and an image to reuse."""

    key: str
    dockerfile_hash: str
    no_cache: bool
    base_missing: bool
    hit: CachedImage | None
    private_to: str = ""  # the scope whose builds alone share this key (see private_to)


def private_to(validation: dockerfile.Validation, scope: str) -> str:
    """The scope (a workspace) whose builds alone may share an image of this Dockerfile: its own,
    when a RUN mounts a cache (what the scope's cache held may be in the image); else none ("")."""
    return scope if dockerfile.uses_cache(validation.instructions) else ""


def look_up(
    platform: Platform,
    validation: dockerfile.Validation,
    scope: str,
    no_cache: bool = False,
    s: Session | None = None,
) -> Lookup:
    """Ask the engine for the base image and for a cached image of this Dockerfile, built for an
    environment of `scope`; the store is read in `s`, or (None) in a short session of its own
    that is closed before the engine is asked."""
    normalised = dockerfile.normalised(validation.instructions)
    base = platform.engine.inspect_image(base_images.image_tag("code-interpreter"))
    private = private_to(validation, scope)
    key = cache_key(normalised, base.id if base else "", private)
    hit = None
    if not no_cache and base is not None:
        candidates = _candidates(s, key) if s is not None else _read(platform, key)
        # With a registry, an image that was never pushed there (built before it was set) is
        # built again: its layers are cached, and its build pushes it.
        pushed = [c for c in candidates if c.image_digest or not platform.config.registry]
        hit = next((c for c in pushed if platform.engine.inspect_image(c.image) is not None), None)
    return Lookup(key, dockerfile_hash(normalised), no_cache, base is None, hit, private)


def _read(platform: Platform, key: str) -> list[CachedImage]:
    with platform.store.session() as s:
        return _candidates(s, key)


def _candidates(s: Session, key: str) -> list[CachedImage]:
    """The ready builds' images of this cache key, newest first."""
    rows = s.scalars(
        select(BuildRow)
        .where(BuildRow.cache_key == key, BuildRow.status == BuildStatus.READY.value)
        .order_by(BuildRow.finished_at.desc())
    )
    return [
        CachedImage(b.environment_id, b.image, b.size_bytes, b.containerfile, b.image_digest)
        for b in rows
        if b.image
    ]


def record(platform: Platform, s: Session, env: EnvironmentRow, lookup: Lookup) -> BuildRow:
    """Add `env`'s new build: ready at once on a cache hit, else queued for a worker."""
    build = BuildRow(
        id=new_id("bld"),
        environment_id=env.id,
        status=BuildStatus.QUEUED.value,
        cache_key=lookup.key,
        dockerfile_hash=lookup.dockerfile_hash,
        containerfile="",  # rendered by the worker, once the base image is known to exist
        no_cache=lookup.no_cache,
    )
    hit = lookup.hit
    if hit is not None:
        build.status = advance(BuildStatus.QUEUED, BuildStatus.READY).value
        build.cache, build.image, build.image_digest = "hit", hit.image, hit.image_digest
        build.cache_reason = f"same Dockerfile as {_maker(s, env, hit)}"
        build.size_bytes = hit.size_bytes
        build.containerfile = hit.containerfile  # what the image was built from, its base image too
        build.started_at = build.finished_at = build.queued_at = utcnow()
        env.image, env.image_digest = hit.image, hit.image_digest
        metrics.of(platform).build_finished("cache-hit")
    else:
        build.cache_reason = _miss_reason(platform, s, lookup)
    s.add(build)
    env.build_id = build.id
    return build


def _maker(s: Session, env: EnvironmentRow, hit: CachedImage) -> str:
    """Which build made the image a cache hit reuses, as `env`'s workspace may read it: the
    environment whose build it was (not one that reused it too, nor `env` itself, which a hit of
    its own earlier hit named as its own source), or "an earlier build" of another workspace's."""
    made = s.scalars(
        select(BuildRow).where(
            BuildRow.image == hit.image, BuildRow.status == BuildStatus.READY.value, BuildRow.cache != "hit"
        )
    ).first()
    source = s.get(EnvironmentRow, made.environment_id if made else hit.environment_id)
    if made is not None and source is not None and source.id == env.id:
        return f"this environment's build {made.id}"
    if source is None or source.id == env.id or source.scope not in (env.scope, SHARED):
        return "an earlier build"
    return f"{source.name}, {source.id}"


def _miss_reason(platform: Platform, s: Session, lookup: Lookup) -> str:
    if lookup.no_cache:
        return "a build without the cache was asked for"
    if lookup.base_missing:
        return "the base image is not built yet"
    earlier_builds = select(BuildRow).where(
        BuildRow.status == BuildStatus.READY.value, BuildRow.dockerfile_hash == lookup.dockerfile_hash
    )
    if lookup.private_to:  # another workspace's builds of it are none of this one's business
        earlier_builds = earlier_builds.join(
            EnvironmentRow, EnvironmentRow.id == BuildRow.environment_id
        ).where(EnvironmentRow.scope == lookup.private_to)
    earlier = s.scalars(earlier_builds.limit(1)).first()
    if earlier is None:
        return "new Dockerfile"
    if earlier.cache_key == lookup.key:
        if platform.config.registry and not earlier.image_digest:
            return "the cached image is not in the registry yet"
        return "the cached image was removed"
    return "the base image changed since the last build of this Dockerfile"
