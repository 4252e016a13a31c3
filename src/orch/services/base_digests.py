"""Where the base images' registry digests are kept: the store's `base_images` table, which
every machine sharing the store reads (docs/registry.md). `orch admin build-images` pushes the
base images and writes their digests; a machine that lacks a base image pulls it by its digest
instead of building it, so every machine builds on the same bytes (and cache keys, which
include the base image's id, hold across machines)."""

from __future__ import annotations

from sqlalchemy import select

from orch.builder import registry
from orch.config import Config
from orch.engine.base import Engine, repository_of
from orch.store import Store
from orch.store.schema import BaseImageRow, utcnow


def known(store: Store) -> dict[str, str]:
    """The recorded digest reference of each pushed base image, by its local tag."""
    with store.session() as s:
        return {row.image: row.digest for row in s.scalars(select(BaseImageRow))}


def push(engine: Engine, config: Config, store: Store, images: dict[str, str]) -> dict[str, str]:
    """Push the base images `images` (recipe name -> local tag) that the configured registry does
    not hold by a recorded digest yet, record their digests, and return them (name -> digest
    reference); nothing when no registry is set. Raise EngineError."""
    if not config.registry:
        return {}
    recorded = known(store)
    pushed: dict[str, str] = {}
    for name, tag in images.items():
        repository = repository_of(registry.remote_name(config.registry, tag))
        digest = recorded.get(tag, "")
        # Recorded for another registry (the setting changed): push it to this one.
        if repository_of(digest) != repository:
            digest = registry.push(engine, config, tag) or ""
            with store.session() as s:
                row = s.get(BaseImageRow, tag)
                if row is None:
                    s.add(BaseImageRow(image=tag, name=name, digest=digest, pushed_at=utcnow()))
                else:
                    row.name, row.digest, row.pushed_at = name, digest, utcnow()
        pushed[name] = digest
    return pushed
