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
        # The root and /proc written otherwise (found by a tester: runc's pivot_root failed).
        ("type=cache,target=/.", "target=/. can't be"),
        ("type=cache,target=/a/..", "target=/a/.. can't be"),
        ("type=tmpfs,target=/./proc", "target=/./proc can't be"),
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


@pytest.mark.parametrize(
    ("lines", "option"),
    [
        # Found by a tester: validation said "valid", then Buildah expanded the target to nothing.
        ("ARG E\nRUN --mount=type=cache,target=${E} true", "target=${E}"),
        ("ARG E\nRUN --mount=type=cache,target=$E true", "target=$E"),
        ("ARG E\nRUN --mount=type=cache,target=${E:-} true", "target=${E:-}"),
        ("ARG E\nRUN --mount=type=tmpfs,dst=${E} true", "dst=${E}"),
        ("ENV E=\nRUN --mount=type=cache,target=$E true", "target=$E"),
        ("ARG E=\nRUN --mount=type=cache,target=/x,destination=$E true", "destination=$E"),  # each is checked
    ],
)
def test_a_target_that_expands_to_nothing_is_refused(lines: str, option: str) -> None:
    [finding] = errors(validate(BASE + lines + "\n"))
    assert (finding.line, finding.instruction) == (3, "RUN")
    assert finding.message == (
        f"RUN --mount {option} expands to nothing, so the mount has no target directory."
    )
    assert "ARG E=/root/.cache/pip" in finding.fix


def test_a_global_arg_redeclared_without_a_value_gives_the_target_its_value() -> None:
    line = "RUN --mount=type=cache,target=$E true\n"
    text = BASE + "ARG E\n" + line
    assert validate(f"ARG E=/x\n{text}").ok
    [finding] = errors(validate(f"ARG E=\n{text}"))
    assert "target=$E expands to nothing" in finding.message


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        ("ARG D=cache\nRUN --mount=type=cache,target=$D true", "$D (that is, cache) is not an absolute"),
        ("ARG D=/\nRUN --mount=type=cache,target=${D} true", "target=${D} (that is, /) can't be"),
        ("ENV D=/proc\nRUN --mount=type=tmpfs,target=$D/x true", "target=$D/x (that is, /proc/x) can't be"),
    ],
)
def test_a_target_is_checked_with_its_variables_values(lines: str, needle: str) -> None:
    [finding] = errors(validate(BASE + lines + "\n"))
    assert needle in finding.message and finding.fix


@pytest.mark.parametrize(
    "lines",
    [
        "ARG E\nRUN --mount=type=cache,target=${E:-/c} true",
        "ARG E\nRUN --mount=type=cache,target=$E/c true",
        "ARG E\nENV E=/x\nRUN --mount=type=cache,target=$E true",  # ENV wins over ARG
        "ENV E=/x\nARG E=\nRUN --mount=type=cache,target=$E true",
        "ARG E=/x\nARG E\nRUN --mount=type=cache,target=$E true",  # the earlier default stays
        # Values that can't be worked out here may well be directories: Buildah decides.
        "RUN --mount=type=cache,target=$HOME/.cache true",  # the base image's ENV may set it
        "ARG HTTPS_PROXY=/x\nRUN --mount=type=cache,target=$HTTPS_PROXY true",  # a build argument
        "ARG TARGETARCH\nRUN --mount=type=cache,target=$TARGETARCH true",  # the build machine's
        "ARG E=/x/\nRUN --mount=type=cache,target=${E:-/y} true",
        "ARG E\nENV F=$G\nRUN --mount=type=cache,target=${F}${E} true",
    ],
)
def test_a_target_that_may_be_a_directory_is_accepted(lines: str) -> None:
    assert validate(BASE + lines + "\n").ok


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        # Found by a tester: 99999999999 is a number, but no uid.
        ("uid=99999999999", "uid=99999999999 is out of range: an id is a number from 0 to 4294967294"),
        ("gid=4294967295", "gid=4294967295 is out of range"),  # the kernel's -1: chown changes nothing
        ("uid=" + "9" * 5000, "is out of range"),  # more digits than Python converts
        ("mode=40000000000", "mode=40000000000 is out of range: a mode is an octal number from 0 to 3777"),
        ("size=8192p", "size=8192p is out of range: a size must be below 8 EiB"),
        ("size=" + "9" * 400, "is out of range"),  # an infinite float
    ],
)
def test_a_number_out_of_range_is_called_so(option: str, needle: str) -> None:
    kind = "tmpfs" if option.startswith("size") else "cache"
    [finding] = errors(validate(BASE + f"RUN --mount=type={kind},target=/x,{option} true\n"))
    assert needle in finding.message and "not a" not in finding.message
    assert "e.g." in finding.fix


def test_numbers_at_the_top_of_their_range_build() -> None:
    options = "target=/x,uid=4294967294,gid=04294967294,mode=37777777777"
    assert without_id(rendered_mount(f"RUN --mount=type=cache,{options} true")) == f"type=cache,{options}"
    tmpfs = "RUN --mount=type=tmpfs,target=/t,tmpfs-mode=37777777777,size=8191p true"
    assert rendered_mount(tmpfs) == f"type=tmpfs,target=/t,tmpfs-mode=37777777777,tmpfs-size={8191 * 1024**5}"


def test_a_value_too_long_to_work_out_is_left_to_podman() -> None:
    """Each ENV doubles A: worked out thirty times over, it would take gigabytes."""
    text = BASE + "ENV A=xxxxxxxx\n" + "ENV A=$A$A\n" * 20 + "RUN --mount=type=cache,target=${A:+} true\n"
    assert validate(text).ok
