"""RUN --mount options: validation refuses what Podman 4.3.1 can't build, and the rendered
Containerfile writes Docker's options as Buildah reads them (docs/environments.md, "Cache
mounts"). Each case was checked with a real `podman build` 4.3.1."""

from __future__ import annotations

import dockerfile
import pytest

from orch.dockerfile import render_containerfile, validate
from tests.unit.dockerfile.support import BASE, errors


def rendered_mount(line: str) -> str:
    """The --mount value Podman gets for a RUN line (no cache owner: ids are orch-HASH)."""
    v = validate(BASE + line + "\n")
    assert v.ok, v.findings
    [_, run] = dockerfile.parse_string(render_containerfile(v.instructions, "localhost/base:1"))
    [flag] = run.flags
    return str(flag).removeprefix("--mount=")


def without_id(value: str) -> str:
    return ",".join(f for f in value.split(",") if not f.startswith("id=orch-"))


@pytest.mark.parametrize(
    ("mount", "needle"),
    [
        # What the tester's builds failed on, after validation said "valid".
        ("type=cache,target=/x,sharing=private", "sharing=private"),
        ("type=cache,target=/", "target=/ can't be"),  # found by a tester: runc refused it
        ("type=tmpfs,target=/proc/x", "target=/proc/x can't be"),
        ("type=cache,target=/sys", "target=/sys can't be"),
        ("type=cache,target=/dev/shm/x", "target=/dev/shm/x can't be"),
        ("type=cache,target=/x,required=true", "required"),
        ("type=cache,target=/x,foo=bar", "foo"),
        ("type=cache,target=/x,size=1g", "size"),  # Docker's size is a tmpfs's only
        # Buildah's "invalid mount option" / "must be an absolute path" / a hung step.
        ("type=cache,target=/x,,", "empty option"),
        ('"type=cache, target=/x"', '" target"'),  # quoted, the flag holds the blank
        ("type=cache,target=x", "absolute path"),
        ("type=cache,target=/x,mode=9", "mode=9"),
        ("type=cache,target=/x,uid=-1", "uid=-1"),
        ("type=cache,target=/x,sharing=$S", "variable"),
        ("type=cache,target=/x,ro=maybe", "ro=maybe"),
        ("type=cache,target=/x,z=1", "takes no value"),
        ("type=cache,target=/x,id", "needs a value"),
        ("'type=cache,\"target=/x,y\"'", "double quote"),  # CSV to Docker, not to Buildah
        ("type=tmpfs,target=/t,id=a", "id"),
        ("type=tmpfs,target=/t,mode=0700", "mode"),
        ("type=tmpfs,target=/t,z", "z"),
        ("type=tmpfs,target=/t,size=lots", "size=lots"),
        ("type=tmpfs,target=/t,tmpfs-size=1.5g", "tmpfs-size=1.5g"),
        ("type=tmpfs,target=/t,tmpfs-mode=u+x", "tmpfs-mode=u+x"),
    ],
)
def test_options_no_build_can_run_are_refused_by_name(mount: str, needle: str) -> None:
    [finding] = errors(validate(BASE + f"RUN --mount={mount} true\n"))
    assert (finding.line, finding.instruction) == (2, "RUN")
    assert needle in finding.message and finding.fix
    assert "Traceback" not in finding.message


def test_a_cache_locked_twice_in_one_step_is_refused() -> None:
    """Buildah waits for its own lock: the step hung until `timeout` stopped it."""
    line = (
        "RUN --mount=type=cache,id=c,target=/a,sharing=locked "
        "--mount=type=cache,id=c,target=/b,sharing=locked true"
    )
    [finding] = errors(validate(BASE + line + "\n"))
    assert "sharing=locked" in finding.message and "(c)" in finding.message
    assert validate(BASE + line.replace("id=c,target=/b,sharing=locked", "id=c,target=/b") + "\n").ok
    assert validate(BASE + line.replace("id=c,target=/b", "id=d,target=/b") + "\n").ok


@pytest.mark.parametrize(
    ("line", "podman_gets"),
    [
        # Docker's tmpfs size (go-units, powers of 1024) is Buildah's tmpfs-size, in bytes.
        ("RUN --mount=type=tmpfs,target=/t,size=100g true", "type=tmpfs,target=/t,tmpfs-size=107374182400"),
        ("RUN --mount=type=tmpfs,target=/t,size=1.5GiB true", "type=tmpfs,target=/t,tmpfs-size=1610612736"),
        ("RUN --mount=type=tmpfs,target=/t,tmpfs-size=512m true", "type=tmpfs,target=/t,tmpfs-size=512m"),
        # Caches and tmpfs mounts are read-write: Buildah knows no rw, and takes ro=false for ro.
        ("RUN --mount=type=tmpfs,target=/t,rw true", "type=tmpfs,target=/t"),
        ("RUN --mount=type=cache,target=/x,readwrite=true true", "type=cache,target=/x"),
        ("RUN --mount=type=cache,target=/x,ro=false true", "type=cache,target=/x"),
        ("RUN --mount=type=cache,target=/x,rw=false true", "type=cache,target=/x,ro"),
        ("RUN --mount=type=cache,target=/x,readonly,rw true", "type=cache,target=/x"),
        ("RUN --mount=type=cache,target=/x,readonly=1 true", "type=cache,target=/x,ro"),
        # Docker reads keys, the type and the sharing mode in any case; Buildah in lower case.
        ("RUN --mount=TYPE=Cache,Target=/x,SHARING=LOCKED true", "type=cache,target=/x,sharing=locked"),
        (
            "RUN --mount=type=cache,dst=/x,uid=1000,gid=1000,mode=0700 true",
            "type=cache,target=/x,uid=1000,gid=1000,mode=0700",
        ),
        # Podman's own options that build are kept.
        ("RUN --mount=type=cache,target=/x,z,nosuid true", "type=cache,target=/x,z,nosuid"),
        (
            "RUN --mount=type=tmpfs,target=/t,tmpfs-mode=1777,tmpcopyup true",
            "type=tmpfs,target=/t,tmpfs-mode=1777,tmpcopyup",
        ),
    ],
)
def test_dockers_options_are_written_as_buildah_reads_them(line: str, podman_gets: str) -> None:
    assert without_id(rendered_mount(line)) == podman_gets


def test_the_cache_is_the_same_whatever_spelling_names_it() -> None:
    """Docker's empty id is no id; ID= is id=: the same cache as the target or the id names."""
    by_target = rendered_mount("RUN --mount=type=cache,target=/root/.cache true")
    assert rendered_mount("RUN --mount=type=cache,target=/root/.cache,id= true") == by_target
    by_id = rendered_mount("RUN --mount=type=cache,target=/a,id=pip true")
    assert rendered_mount("RUN --mount=type=cache,Target=/a,ID=pip true") == by_id
    assert by_id != by_target


def test_variables_in_a_target_id_or_source_are_left_to_buildah() -> None:
    """Buildah expands them as Docker does (checked: target=$D mounts /x for ARG D=/x)."""
    text = BASE + "ARG D=/x\nRUN --mount=type=cache,target=$D,source=${D} true\n"
    assert validate(text).ok
