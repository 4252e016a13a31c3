"""The platform's images that no record names any more, and their removal at start.

Every image a build or a deployment makes is named in the store: an environment's image by the
environments that run it (the cache reuses it for others of the same Dockerfile), a service's by
the service while that version serves. Each build makes an image of its own tag, so a rebuild
moves only its own environment to the new image; the old one goes once nothing names it
(`release`). A kill can leave an image that nothing names: a build or a deployment it cut short
after the image was made, which then failed; a redeploy's previous version, whose removal
came after the switch was stored; and untagged images (see Engine.remove_untagged_images). At
start, before any of the platform's builds or deployments runs, they go.

A cluster's environments are deleted and rebuilt on its server, which holds none of their
images: each node holds those it built or pulled, and lets go of the ones no record names any
more as it goes (`release_held`)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch.errors import OrchError
from orch.models import SHARED, BuildStatus, DeploymentStatus
from orch.services.platform import Platform
from orch.store.schema import BuildRow, EnvironmentRow, ServiceDeploymentRow, ServiceRow

log = logging.getLogger(__name__)


ENVIRONMENT_IMAGES = "localhost/orch-env/"  # how every environment image's tag begins


def environment_tag(platform: Platform, cache_key: str, build_id: str) -> str:
    """The tag of the image build `build_id` (of this cache key) makes: its own, never another
    build's, so that a build replaces no image another environment runs. (Environments that
    share a Dockerfile share an image through the cache: a hit names the earlier build's tag.)"""
    return f"{ENVIRONMENT_IMAGES}{platform.instance}:{cache_key[:20]}-{build_id}"


def shown(s: Session, workspace_id: str, tag: str | None, own_build: str | None) -> str | None:
    """An environment's image `tag` as workspace `workspace_id` is shown it (an environment's
    `image`, its build's). Whole when the build the tag names is the environment's own
    (`own_build`), or one of an environment the workspace sees (its own, a shared one). A cache
    hit on another workspace's build shows the tag without that build's id,
    `localhost/orch-env/INSTANCE:KEY20`: what the image holds (the cache key, which the
    workspace's own build has too), nothing of the other workspace (docs/environments.md,
    "Build cache"; found by a tester: the tag told one workspace another's build id). A build
    whose environment is deleted stays while its workspace runs its image (environments.remove),
    so the workspace goes on seeing the tag whole."""
    if not tag:
        return tag
    repository, _, name = tag.rpartition(":")
    key, _, build_id = name.partition("-")
    if not build_id.startswith("bld_") or build_id == own_build:
        return tag
    made = s.get(BuildRow, build_id)
    source = s.get(EnvironmentRow, made.environment_id) if made is not None else None
    if source is not None and source.scope in (workspace_id, SHARED):
        return tag
    return f"{repository}:{key}"


def service_tag(platform: Platform, service_id: str, name: str, version: int) -> str:
    """The tag of the image a service's version `version` is built as: its service's own, by
    the service's id (its name, for the reader): services of one name in two workspaces, or one
    deleted and one made since, never share a tag (found by a tester: with `NAME-vN` alone, a
    workspace's deploy retagged another's image, and that one's next restart ran its code)."""
    return f"localhost/orch-svc/{platform.instance}:{name}-{service_id}-v{version}"


def named(s: Session, platform: Platform) -> set[str]:
    """Every image tag the store names, or will name once the work in flight is done."""
    tags = set(s.scalars(select(EnvironmentRow.image).where(EnvironmentRow.image.is_not(None))))
    in_flight = [BuildStatus.QUEUED.value, BuildStatus.BUILDING.value]
    for build_id, key in s.execute(
        select(BuildRow.id, BuildRow.cache_key).where(BuildRow.status.in_(in_flight))
    ):
        if key:  # a build run again reuses the layers of the image it made before the kill
            tags.add(environment_tag(platform, key, build_id))
    tags |= set(s.scalars(select(ServiceRow.image).where(ServiceRow.image.is_not(None))))
    unfinished = [s.value for s in DeploymentStatus if not s.final]
    deploying = select(ServiceRow.id, ServiceRow.name, ServiceDeploymentRow.version).join(
        ServiceDeploymentRow, ServiceDeploymentRow.service_id == ServiceRow.id
    )
    for service_id, name, version in s.execute(deploying.where(ServiceDeploymentRow.status.in_(unfinished))):
        tags.add(service_tag(platform, service_id, name, version))
    return {t for t in tags if t}


def release(platform: Platform, image: str) -> None:
    """Remove the platform's environment image `image` if no environment names it any more (its
    environment moved to a new build's image, or was deleted). One that an open sandbox uses
    loses its name now, and goes when the sandbox ends. Raise EngineError."""
    with platform.store.session() as s:
        if s.scalar(select(EnvironmentRow.id).where(EnvironmentRow.image == image).limit(1)):
            return
    info = platform.engine.inspect_image(image)
    if info is not None and info.labels.get("org.orch.instance") == platform.instance:
        _remove(platform, image)


def _remove(platform: Platform, image: str) -> None:
    platform.engine.remove_image(image)
    # Refused while an open sandbox uses it: its name goes now, the image with the sandbox.
    platform.engine.untag_image(image)
    # Refused too while a launcher holds it for sandboxes that have ended: each lets go of it
    # now (an idle server kept it until some other sandbox ended: found by a tester).
    for launcher in platform.launchers.values():
        launcher.let_go()


def release_held(platform: Platform) -> list[str]:
    """On a cluster node: remove the environment images it holds (built or pulled by this
    process: `present_base_tags`) that no record names any more, nor a build under way here
    (`named`): their environment was deleted, or moved to a newer build's image, on the
    cluster's server, which has none of them to remove. Its warm sandboxes of them go too. One
    that a build of this node just made is named by its build until the build is stored.
    Return the tags removed; one the engine would not remove stays held, and is tried again."""
    # Copied at once (in C, whole): run workers add to the set while this looks through it.
    held = {t for t in set(platform.present_base_tags) if t.startswith(ENVIRONMENT_IMAGES)}
    if not held:
        return []
    with platform.store.session() as s:
        unnamed = held - named(s, platform)
    removed = []
    for tag in sorted(unnamed):
        try:
            _remove(platform, tag)
        except OrchError as e:
            log.warning("removing %s, which no environment runs any more: %s", tag, e)
            continue
        platform.present_base_tags.discard(tag)
        removed.append(tag)
    return removed


def remove_unnamed(platform: Platform) -> list[str]:
    """Remove the platform's images that no record names; call it only while none of the
    platform's builds or deployments runs. An image a container still uses stays (until the
    next start). Return the tags removed."""
    with platform.store.session() as s:
        keep = named(s, platform)
    removed: list[str] = []
    # Storage only: nothing here is worth failing a start for.
    try:
        found = platform.engine.images({"org.orch.instance": platform.instance})
    except OrchError as e:
        log.warning("listing the platform's images: %s", e)
        found = []
    for image in found:
        if not image.tags or keep.intersection(image.tags):
            continue
        for tag in image.tags:
            try:
                platform.engine.remove_image(tag)
            except OrchError as e:
                log.warning("removing %s: %s", tag, e)
                continue
            removed.append(tag)
    try:
        platform.engine.remove_untagged_images(platform.instance)
    except OrchError as e:
        log.warning("removing the platform's untagged images: %s", e)
    return removed
