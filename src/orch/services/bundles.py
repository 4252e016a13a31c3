"""Bundles in the store: the archives agent versions and service deployments run, kept once by
content (sha256) and shared by both, so any machine of the store can run any of them
(docs/scale.md). Each machine extracts a bundle once, at its first use there, under
ORCH_HOME/bundles/SHA256, with the bytecode of its Python modules (orch.bundle.bytecode), and
its runs share that copy read-only.

    keep(s, sha256, data)          in the transaction that adds the version or deployment
    remove_unused(platform, shas)  the bundles no version and no deployment refers to any longer
    extracted(platform, sha256)    this machine's copy of its files
    import_files(platform)         the archives servers before 0014 kept as files
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from orch.bundle import extract_bundle
from orch.bundle.bytecode import compile_modules
from orch.errors import Conflict, NotFound
from orch.locking import file_lock
from orch.models import new_id
from orch.services.platform import Platform
from orch.store.schema import AgentVersionRow, BundleRow, ServiceDeploymentRow, utcnow

_TRIES = 5  # a bundle stored and removed at once, again and again: a Conflict after this many


def keep(s: Session, sha256: str, data: bytes) -> None:
    """Store the bundle `data` (whose digest is `sha256`) unless the store has it already. On
    PostgreSQL its row stays locked until `s` commits (with the version or deployment that
    refers to it), so `remove_unused` on any machine waits for that commit, then sees the bundle
    used; a bundle being removed meanwhile is stored again once its removal commits."""
    if s.get_bind().dialect.name != "postgresql":
        if s.scalar(select(BundleRow.sha256).where(BundleRow.sha256 == sha256)) is None:
            s.add(BundleRow(sha256=sha256, size=len(data), data=data))
        return
    for _ in range(_TRIES):
        found = select(BundleRow.sha256).where(BundleRow.sha256 == sha256).with_for_update()
        if s.scalar(found) is not None:
            return
        new = insert(BundleRow).values(sha256=sha256, size=len(data), data=data, created_at=utcnow())
        if s.execute(new.on_conflict_do_nothing().returning(BundleRow.sha256)).first() is not None:
            return  # (another transaction's insert of it, once committed, is found and locked next)
    raise Conflict(
        f"The bundle {sha256[:12]} was being stored and removed at once {_TRIES} times.", "Try again."
    )


@contextmanager
def lock(platform: Platform) -> Iterator[None]:
    """Held from storing a bundle to committing the version that refers to it, and while unused
    bundles are removed: a publish never refers to a bundle being removed. On SQLite (one
    machine) it is this machine's file lock; on PostgreSQL it holds nothing, and the bundles'
    rows are locked instead (`keep`, `remove_unused`), across every machine of the store."""
    if platform.store.db.dialect.name == "postgresql":
        yield
        return
    with file_lock(_local(platform) / ".lock"):
        yield


def remove_unused(platform: Platform, shas: Iterable[str]) -> None:
    """Remove the bundles of `shas` that no agent version and no service deployment refers to
    any longer, with this machine's extracted copies of them."""
    wanted = set(shas)
    if not wanted:
        return
    with lock(platform), platform.store.session() as s:
        # On PostgreSQL: wait for the publishes that hold them to commit (then they are used).
        s.execute(
            select(BundleRow.sha256)
            .where(BundleRow.sha256.in_(wanted))
            .order_by(BundleRow.sha256)
            .with_for_update()
        )
        used = set(
            s.scalars(select(AgentVersionRow.bundle_sha256).where(AgentVersionRow.bundle_sha256.in_(wanted)))
        )
        used |= set(
            s.scalars(
                select(ServiceDeploymentRow.bundle_sha256).where(
                    ServiceDeploymentRow.bundle_sha256.in_(wanted)
                )
            )
        )
        s.execute(delete(BundleRow).where(BundleRow.sha256.in_(wanted - used)))
    for sha in wanted - used:
        shutil.rmtree(_local(platform) / sha, ignore_errors=True)


def extracted(platform: Platform, sha256: str) -> Path:
    """The bundle's files on this machine: extracted from the store at their first use here, then
    shared read-only by its runs."""
    target = _local(platform) / sha256
    if not target.exists():
        with platform.store.session() as s:
            data = s.scalar(select(BundleRow.data).where(BundleRow.sha256 == sha256))
        if data is None:
            raise NotFound(f"The bundle {sha256[:12]} is not in the store.", "Publish the agent again.")
        tmp = target.with_name(f"{sha256}.tmp-{new_id('x')}")
        extract_bundle(bytes(data), tmp)
        compile_modules(tmp)  # before the rename: a run sees the bundle whole, bytecode included
        try:
            tmp.rename(target)
        except OSError:  # another run extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def stored(platform: Platform, sha256: str) -> bool:
    with platform.store.session() as s:
        return s.scalar(select(BundleRow.sha256).where(BundleRow.sha256 == sha256)) is not None


def import_files(platform: Platform) -> int:
    """Move the archives servers before 0014 kept (ORCH_HOME/bundles/SHA256.tar.gz) into the
    store, then remove them; return how many moved. Done at start, before any worker runs."""
    moved = 0
    for path in sorted(_local(platform).glob("*.tar.gz")):
        sha = path.name.removesuffix(".tar.gz")
        with platform.store.session() as s:
            if s.scalar(select(BundleRow.sha256).where(BundleRow.sha256 == sha)) is None:
                keep(s, sha, path.read_bytes())
                moved += 1
        path.unlink()
    return moved


def _local(platform: Platform) -> Path:
    path = platform.config.home / "bundles"
    path.mkdir(parents=True, exist_ok=True)
    return path
