"""Environment use cases: list, show, create, build, delete, and the workspace default."""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from orch import dockerfile
from orch.builder import base_images
from orch.builder.predefined import BASE_ENVIRONMENTS, PREDEFINED
from orch.errors import Conflict, InvalidDockerfile, InvalidInput, NotFound
from orch.models import SHARED as SHARED  # the scope of base and predefined environments
from orch.models import BuildStatus, EnvKind, EnvStatus, check_name, new_id
from orch.services import build_output, build_requests, images, log_files, refs, usage
from orch.services.platform import Platform
from orch.services.views import (
    BuildLogChunk,
    BuildView,
    CreatedEnvironment,
    EnvironmentView,
    FindingView,
)
from orch.store.db import hold
from orch.store.schema import BuildRow, EnvironmentRow, WorkspaceRow

# ---- seeding --------------------------------------------------------------------------------


def seed_builtins(platform: Platform) -> None:
    """Make the base and predefined environments exist, with the Dockerfiles this version ships."""
    with platform.store.session() as s:
        existing = {
            e.name: e for e in s.scalars(select(EnvironmentRow).where(EnvironmentRow.scope == SHARED))
        }
        for name, (_recipe, description) in BASE_ENVIRONMENTS.items():
            if name not in existing:
                s.add(_builtin_row(name, EnvKind.BASE, description, None))
        for p in PREDEFINED:
            row = existing.get(p.name)
            if row is None:
                s.add(_builtin_row(p.name, EnvKind.PREDEFINED, p.description, p.dockerfile))
            elif row.dockerfile != p.dockerfile:
                row.dockerfile, row.description = p.dockerfile, p.description


def _builtin_row(name: str, kind: EnvKind, description: str, text: str | None) -> EnvironmentRow:
    # Stable, readable ids for what every platform has: env_python, env_python_ml, ...
    return EnvironmentRow(
        id="env_" + name.replace("-", "_"),
        scope=SHARED,
        name=name,
        kind=kind.value,
        dockerfile=text,
        description=description,
    )


# ---- reading --------------------------------------------------------------------------------


def _visible(ws: WorkspaceRow) -> ColumnElement[bool]:
    return or_(EnvironmentRow.scope == SHARED, EnvironmentRow.scope == ws.id)


def resolve(s: Session, ws: WorkspaceRow, ref: str) -> EnvironmentRow:
    """The environment called `ref` (an id or a name) in this workspace, or NotFound."""
    return refs.find(
        s,
        EnvironmentRow,
        ref,
        _visible(ws),
        id_prefix="env_",
        what="environment",
        fix="See `orch env list` for the ids and names you can use.",
    )


def view(platform: Platform, s: Session, ws: WorkspaceRow, env: EnvironmentRow) -> EnvironmentView:
    build = s.get(BuildRow, env.build_id) if env.build_id else None
    status, image, digest = _status(platform, env, build)
    return EnvironmentView(
        id=env.id,
        name=env.name,
        kind=env.kind,
        status=status.value,
        default=ws.default_environment_id == env.id,
        description=env.description,
        image=images.shown(s, ws.id, image, env.build_id),  # nothing of another workspace's build
        image_digest=digest,
        cache=build.cache if build else None,
        cache_reason=build.cache_reason if build else None,
        build_id=build.id if build else None,
        error=build.error if build else None,
        created_at=env.created_at,
        build=_build_view(build, images.shown(s, ws.id, build.image, build.id)) if build else None,
        dockerfile=env.dockerfile,
    )


def _status(
    platform: Platform, env: EnvironmentRow, build: BuildRow | None
) -> tuple[EnvStatus, str | None, str | None]:
    """The environment's status, its image and the image's registry digest."""
    if env.kind == EnvKind.BASE:
        tag = base_images.image_tag(BASE_ENVIRONMENTS[env.name][0])
        # Asked of the engine until it has the image, then known (as by the run path): base images
        # are named by their recipe's hash, and the platform never removes them.
        if tag not in platform.present_base_tags and platform.engine.inspect_image(tag) is not None:
            platform.present_base_tags.add(tag)
        return (EnvStatus.READY if tag in platform.present_base_tags else EnvStatus.NOT_BUILT), tag, None
    if build is None:
        return EnvStatus.NOT_BUILT, None, None
    if build.status == BuildStatus.READY.value:
        # The environment's current build, ready: its image and digest are the environment's,
        # written in the same commit. Read from the build, the row read last: on PostgreSQL each
        # statement sees what was committed when it began, so the environment's row, read first,
        # may be from before that commit (no image, no digest yet) and the build's from after it.
        return EnvStatus.READY, build.image, build.image_digest
    return EnvStatus(build.status), env.image, env.image_digest


def _build_view(b: BuildRow, image: str | None) -> BuildView:
    """`b` with its image as the workspace is shown it (images.shown)."""
    duration = (b.finished_at - b.started_at).total_seconds() if b.started_at and b.finished_at else None
    return BuildView.model_validate(
        {**_columns(b), "image": image, "duration": duration, "base_image": _base_image(b.containerfile)}
    )


def _base_image(containerfile: str) -> str | None:
    """The image a build's Containerfile starts FROM (None while the build has not started)."""
    first = containerfile.split("\n", 1)[0].split()
    return first[1] if len(first) == 2 and first[0] == "FROM" else None


def _columns(row: object) -> dict[str, object]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}  # type: ignore[attr-defined]


def list_environments(platform: Platform, ws_id: str) -> list[EnvironmentView]:
    with platform.store.session() as s:
        ws = _workspace(s, ws_id)
        rows = s.scalars(select(EnvironmentRow).where(_visible(ws))).all()
        order = {EnvKind.BASE: 0, EnvKind.PREDEFINED: 1, EnvKind.CUSTOM: 2}
        rows = sorted(rows, key=lambda e: (order[EnvKind(e.kind)], e.created_at, e.name))
        return [view(platform, s, ws, e) for e in rows]


def show(platform: Platform, ws_id: str, ref: str) -> EnvironmentView:
    with platform.store.session() as s:
        ws = _workspace(s, ws_id)
        return view(platform, s, ws, resolve(s, ws, ref))


def _workspace(s: Session, ws_id: str) -> WorkspaceRow:
    ws = s.get(WorkspaceRow, ws_id)
    if ws is None:
        raise NotFound(f"Workspace {ws_id} no longer exists.", "Log in to another workspace.")
    return ws


# ---- validating and creating ----------------------------------------------------------------


def validate(text: str) -> dockerfile.Validation:
    return dockerfile.validate(text)


def _findings(v: dockerfile.Validation, severity: str | None = None) -> list[FindingView]:
    return [
        FindingView.model_validate(f.to_dict())
        for f in v.findings
        if severity is None or f.severity.value == severity
    ]


def create(
    platform: Platform, ws_id: str, name: str, text: str, no_cache: bool = False, made_for: str | None = None
) -> CreatedEnvironment:
    """Validate, then reuse a cached image at once or queue a build. `made_for`: the agent or
    service whose published Dockerfile this is (None: the workspace's own)."""
    check_name(name, id_prefix="env_")
    validation = dockerfile.validate(text)
    if not validation.ok:
        errors = [f for f in validation.findings if f.severity == dockerfile.Severity.ERROR]
        first = errors[0]
        text = first.message if first.message.endswith(".") else f"{first.message}."
        n = len(errors) - 1
        more = f" {n} more {'error is' if n == 1 else 'errors are'} listed in the findings." if n else ""
        raise InvalidDockerfile(
            f"The Dockerfile is not valid: line {first.line} {first.instruction}: {text}{more}",
            first.fix,
            findings=[f.to_dict() for f in validation.findings],
        )
    lookup = build_requests.look_up(platform, validation, ws_id, no_cache)  # before the transaction
    # A create of the same name at the same moment, past _check_free too, loses at the unique key.
    with platform.store.session(clash=_name_taken(name)) as s:
        # An environment refers to its workspace by `scope`, no foreign key: a workspace's delete
        # at the same moment either sees this one and removes it, or commits first and this
        # finds the workspace gone (services/workspace_deletes.py).
        hold(s, WorkspaceRow, ws_id, shared=True)
        ws = _workspace(s, ws_id)
        _check_free(s, ws, name)
        env = EnvironmentRow(
            id=new_id("env"),
            scope=ws.id,
            name=name,
            kind=EnvKind.CUSTOM.value,
            dockerfile=text,
            description=_leading_comment(text),
            made_for=made_for,
        )
        s.add(env)
        build = build_requests.record(platform, s, env, lookup)
        s.flush()
        result = view(platform, s, ws, env)
        ready = build.status == BuildStatus.READY
    if not ready:
        platform.wake_builds.set()
    return CreatedEnvironment.model_validate(
        {**result.model_dump(), "warnings": _findings(validation, "warning")}
    )


def _leading_comment(text: str) -> str:
    """The Dockerfile's first comment line, as its description (parser directives excluded)."""
    for line in text.lstrip("\ufeff").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return ""
        body = stripped.lstrip("#").strip()
        if body and not re.match(r"^(syntax|escape|check)\s*=", body, re.IGNORECASE):
            return body[:200]
    return ""


def _check_free(s: Session, ws: WorkspaceRow, name: str) -> None:
    if s.scalar(select(EnvironmentRow.id).where(_visible(ws), EnvironmentRow.name == name)):
        raise _name_taken(name)


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f"An environment named {name!r} already exists in this workspace.",
        "Choose another name, or delete the existing one first.",
    )


def queue_build(
    platform: Platform,
    s: Session,
    env: EnvironmentRow,
    validation: dockerfile.Validation,
    no_cache: bool = False,
) -> BuildRow:
    """Record a build for `env` inside the caller's session (the engine is asked in it too:
    callers that can, look up first with build_requests.look_up, outside their session)."""
    lookup = build_requests.look_up(platform, validation, env.scope, no_cache, s)
    return build_requests.record(platform, s, env, lookup)


def build(platform: Platform, ws_id: str, ref: str, no_cache: bool = False) -> EnvironmentView:
    """Build (or rebuild) an environment now: predefined ones ahead of first use, custom ones
    again, e.g. without the cache. One being built goes on (its view says so: same build_id)."""
    with platform.store.session() as s:
        env = _buildable(s, _workspace(s, ws_id), ref, no_cache)
        text = None if _building(s, env) else env.dockerfile or ""
        scope = env.scope
    # The engine is asked between the two transactions; the second checks again.
    lookup = (
        build_requests.look_up(platform, dockerfile.validate(text), scope, no_cache)
        if text is not None
        else None
    )
    with platform.store.session() as s:
        ws = _workspace(s, ws_id)
        env = _buildable(s, ws, ref, no_cache)
        before = env.image
        if not _building(s, env):
            again = lookup or build_requests.look_up(
                platform, dockerfile.validate(env.dockerfile or ""), env.scope, no_cache, s
            )
            build_requests.record(platform, s, env, again)
        result = view(platform, s, ws, env)
        after = env.image
    if before and before != after:  # a cache hit on another build's image: its own may go
        images.release(platform, before)
    platform.wake_builds.set()
    return result


def _buildable(s: Session, ws: WorkspaceRow, ref: str, no_cache: bool) -> EnvironmentRow:
    """The environment `ref`, unless it can't be built now: a base one, or, asked without the
    cache, one whose build under way uses it (one under way without the cache is what was asked
    for: it is followed, as a build with the cache is)."""
    env = resolve(s, ws, ref)
    if env.kind == EnvKind.BASE:
        raise InvalidInput(
            f"{env.name} is a base environment; its image is built by the platform.",
            "The platform's operator builds base images on the server's machine (scripts/setup does it).",
        )
    if no_cache and (current := _unfinished(s, env)) is not None and not current.no_cache:
        raise Conflict(
            f"{env.name} is already being built ({current.id}) with the cache, so a build without it "
            "(--no-cache) can't start until that one has ended.",
            f"Follow it with `orch env status {env.name} --follow`, then run "
            f"`orch env build {env.name} --no-cache`.",
        )
    return env


def _unfinished(s: Session, env: EnvironmentRow) -> BuildRow | None:
    """`env`'s current build, if it has not ended yet."""
    current = s.get(BuildRow, env.build_id) if env.build_id else None
    return current if current is not None and not BuildStatus(current.status).final else None


def _building(s: Session, env: EnvironmentRow) -> bool:
    """Whether `env`'s current build has not ended yet."""
    return _unfinished(s, env) is not None


# How a failed build's error starts when Podman could not read an instruction of its Dockerfile
# (workers/builds.py): the Dockerfile is at fault, as with a step that failed, though no step ran.
UNREAD = "Podman could not read line"


def dockerfile_at_fault(build: BuildRow) -> bool:
    """Whether failed `build` failed for its Dockerfile (a step's command, or an instruction
    Podman could not read), which only a new Dockerfile fixes; not a timeout, a push, a stop."""
    return build.failed_step is not None or (build.error or "").startswith(UNREAD)


def failed_build_fix(name: str, kind: str, at_step: bool = True) -> str:
    """What to do about environment `name` whose build failed (`at_step`: a step of its
    Dockerfile failed). An environment keeps its Dockerfile, so a custom one whose step failed is
    fixed by a new one (an agent's own: by publishing again); any other failure (a timeout, a
    push, server stops) by building it again, as `orch env status` says."""
    if kind == EnvKind.CUSTOM and at_step:
        return (
            f"Read why with `orch env logs {name}`, then delete it and create it again with the "
            "Dockerfile fixed (an agent's own Dockerfile: fix it and publish again with --docker)."
        )
    return f"Read why with `orch env logs {name}`, then build it again with `orch env build {name}`."


def ensure_built(platform: Platform, s: Session, env: EnvironmentRow) -> None:
    """First use of a predefined environment: queue its build if it never had one."""
    if env.kind == EnvKind.PREDEFINED and env.build_id is None:
        queue_build(platform, s, env, dockerfile.validate(env.dockerfile or ""))
        platform.wake_builds.set()


# ---- deleting and the workspace default -----------------------------------------------------


def delete(platform: Platform, ws_id: str, ref: str) -> EnvironmentView:
    with platform.store.session() as s:
        hold(s, WorkspaceRow, ws_id)  # against set_default at the same moment: one of them loses
        ws = _workspace(s, ws_id)
        env = resolve(s, ws, ref)
        if env.kind != EnvKind.CUSTOM:
            raise InvalidInput(
                f"{env.name} is a {env.kind} environment and can't be deleted.",
                "Only custom environments, the ones a workspace created, can be deleted.",
            )
        if ws.default_environment_id == env.id:
            raise Conflict(
                f"{env.name} is the workspace default environment.",
                "Clear the workspace default (`orch env clear-default`) or set another one, then "
                "delete again.",
            )
        users = usage.users(s, ws.id, env)
        if users:
            raise Conflict(
                f"{env.name} is used by {len(users)} agent{'s' if len(users) > 1 else ''} "
                f"({', '.join(users)}).",
                "Delete those agents, or publish them again using another environment, then delete "
                "this one again.",
            )
        result = view(platform, s, ws, env)
        image = remove(s, env)
    if image:
        images.release(platform, image)
    return result


def remove(s: Session, env: EnvironmentRow) -> str | None:
    """Delete `env`'s row and its builds' (their logs go with them); return its image, which
    the caller releases (images.release) once the session has committed.

    A build of `env` that made an image another environment of the workspace still runs (a
    cache hit on it) is kept, as that environment's: it is what tells whose build the image's
    tag names, so the workspace is still shown the tag whole (images.shown), and later hits
    still name an environment of the workspace as their source. The hits that named `env` as
    their source say it was deleted since (docs/environments.md, "Build cache"; found by a
    tester: the tag was shown cut, and the reason named the deleted environment as if it were
    there)."""
    image = env.image
    # A build under way is stopped by its worker, which sees its row go (workers/builds.py);
    # one whose server is gone, by that server's next start.
    s.delete(env)
    for b in s.scalars(select(BuildRow).where(BuildRow.environment_id == env.id)).all():
        heir = _heir(s, env, b)
        if heir is None:
            s.delete(b)
        else:
            b.environment_id = heir.id
    named = f"same Dockerfile as {env.name}, {env.id}"  # as build_requests.record words a hit
    s.execute(
        update(BuildRow)
        .where(BuildRow.cache_reason == named)
        .values(cache_reason=f"{named} {DELETED_SOURCE}")
    )
    return image


# What a cache hit's reason adds once the environment it names as its source is deleted.
DELETED_SOURCE = "(since deleted)"


def _heir(s: Session, env: EnvironmentRow, b: BuildRow) -> EnvironmentRow | None:
    """The environment of `env`'s workspace that keeps build `b` once `env` is deleted: one
    that still runs the image `b` made (reused through the cache). None: `b` goes with `env`."""
    if b.cache == "hit" or b.status != BuildStatus.READY.value or not b.image:
        return None  # a hit made no image; an unfinished or failed build names none yet
    return s.scalars(
        select(EnvironmentRow)
        .where(
            EnvironmentRow.scope == env.scope,
            EnvironmentRow.image == b.image,
            EnvironmentRow.id != env.id,
        )
        .order_by(EnvironmentRow.created_at, EnvironmentRow.id)
    ).first()


def set_default(platform: Platform, ws_id: str, ref: str) -> EnvironmentView:
    with platform.store.session() as s:
        hold(s, WorkspaceRow, ws_id)  # against delete at the same moment: one of them loses
        ws = _workspace(s, ws_id)
        env = resolve(s, ws, ref)
        build = s.get(BuildRow, env.build_id) if env.build_id else None
        if build is not None and build.status == BuildStatus.FAILED.value and not env.image:
            # Every run of an agent without an environment of its own would fail at once.
            raise Conflict(
                f"{env.name} can't be the workspace default: its build failed, so no run could start in it.",
                f"{failed_build_fix(env.name, env.kind, dockerfile_at_fault(build))} "
                "Or set a ready environment as the default.",
            )
        ensure_built(platform, s, env)
        ws.default_environment_id = env.id
        s.flush()
        return view(platform, s, ws, env)


def clear_default(platform: Platform, ws_id: str) -> EnvironmentView | None:
    with platform.store.session() as s:
        ws = _workspace(s, ws_id)
        previous = s.get(EnvironmentRow, ws.default_environment_id) if ws.default_environment_id else None
        ws.default_environment_id = None
        s.flush()
        return view(platform, s, ws, previous) if previous else None


def get_default(platform: Platform, ws_id: str) -> EnvironmentView | None:
    with platform.store.session() as s:
        ws = _workspace(s, ws_id)
        env = s.get(EnvironmentRow, ws.default_environment_id) if ws.default_environment_id else None
        return view(platform, s, ws, env) if env else None


LOG_CHUNK = 1 << 20  # bytes of build log per answer; callers ask again while `more`


def read_log(
    platform: Platform, ws_id: str, ref: str, offset: int = 0, build_id: str | None = None
) -> BuildLogChunk:
    """A build's log from byte `offset`: the environment's current build, or `build_id` of it."""
    with platform.store.session() as s:
        ws = _workspace(s, ws_id)
        env = resolve(s, ws, ref)
        wanted = build_id or env.build_id
        b = s.get(BuildRow, wanted) if wanted else None
        if build_id and (b is None or b.environment_id != env.id):
            raise NotFound(
                f"{env.name} has no build {build_id!r}.",
                "Leave the build out to read the latest; the environment's status shows its build's id.",
            )
        if b is None:  # a base environment, or one never built: its status, as everywhere
            status = _status(platform, env, None)[0].value
            return BuildLogChunk(text="", offset=0, size=0, more=False, status=status)
    # Nothing stored: a cache hit, or a build not started yet.
    with platform.store.session() as s:
        read, size = build_output.read(s, b.id, offset, LOG_CHUNK)
    data = log_files.whole_characters(read)
    end = max(offset, 0) + len(data)
    return BuildLogChunk(
        text=data.decode("utf-8", "replace"),
        offset=end,
        size=size,
        # Only a read cut by the chunk's size: one cut by a character still being written ends
        # here for now (so a follower waits for the rest rather than asking again at once).
        more=len(read) == LOG_CHUNK and end < size,
        status=b.status,
        build_id=b.id,
    )
