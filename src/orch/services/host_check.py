"""The machine's self-check: what sandboxes, builds and services need of the host.

First the host pieces that the engine's flags rely on are looked for (each names the Debian
package that brings it); then one real sandbox starts through the run path (`run_spec`: init,
limits, a root of its own, sized tmpfs, the sandbox network) and one build step runs. A failure
is one sentence naming what is missing and how to get it; a piece is named only when it is
missing indeed (Podman's error may name a piece that is there). A piece that orch runs by name
is looked for through PATH too: one installed in a folder that PATH lacks is said so, with the
folder to add. `scripts/setup` ends with this check, `orch admin check` runs it on demand, and
`orch server` runs it at start (`watch`).

What weakens sandboxes without stopping them (`warnings`: the sandboxes' host uid is an
account here) is said beside the result and fails nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orch.builder import base_images
from orch.builder.host import ca_mounts
from orch.engine import podman, programs
from orch.engine.base import BuildRequest, Engine, Mount
from orch.errors import HostCheckFailed, OrchError
from orch.sandbox.deps import Deps
from orch.sandbox.launcher import Isolation
from orch.sandbox.layout import SANDBOX_USER
from orch.sandbox.spec import Limits, run_spec
from orch.services.platform import Platform

_SETUP = "Run scripts/setup (it installs every piece), then `orch admin check`."


@dataclass(frozen=True)
class Piece:
    """One thing on the host that a flag of the engine relies on."""

    what: str
    package: str
    paths: Sequence[str]  # any one of them present is enough
    # What Podman says when the piece is missing: how a failed start is traced back to it.
    symptom: str
    # The oldest Debian version that serves (empty: any), and the apt arguments that get it.
    at_least: str = ""
    install: str = ""
    # The name orch (not Podman, which looks in its own folders) runs it by, through PATH.
    command: str = ""

    def present(self) -> bool:
        return any(Path(p).exists() for p in self.paths) and not self._too_old()

    def usable(self) -> bool:
        return self.present() and not self.off_path()

    def off_path(self) -> Path | None:
        """Where the piece is installed when orch runs it by name and PATH lacks that folder."""
        if not self.command or shutil.which(self.command):
            return None
        return next((Path(p) for p in self.paths if Path(p).exists()), None)

    def missing_in(self, output: str) -> bool:
        """Whether `output` (an engine's error) says this piece is missing and it is: absent, or
        absent at the one of its paths that the error names (the path Podman looks at). Only
        the host decides: a piece's name in a failed sandbox's output (catatonit's own errors
        carry it) blames nothing that is there."""
        if not re.search(self.symptom, output, re.IGNORECASE):
            return False
        return not self.present() or any(p in output and not Path(p).exists() for p in self.paths)

    def _too_old(self) -> str:
        """The installed version when it is older than `at_least` ("" when it serves, or when
        dpkg does not know the package: installed some other way)."""
        if not self.at_least:
            return ""
        version = _dpkg_version(self.package)
        if not version or _dpkg_at_least(version, self.at_least):
            return ""
        return version

    def problem(self) -> HostCheckFailed:
        install = self.install or self.package
        fix = f"Install it with apt-get install {install}, or run scripts/setup."
        if old := self._too_old():
            return HostCheckFailed(
                f"The installed {self.package} ({old}) is older than {self.at_least}, the oldest "
                "that orch can use.",
                fix,
                package=self.package,
            )
        if self.present() and (where := self.off_path()):
            return HostCheckFailed(*programs.not_on_path(self.command, where), package=self.package)
        return HostCheckFailed(
            f"This machine lacks {self.what}.",
            f"Install the Debian package {self.package} (apt-get install {install}), or run scripts/setup.",
            package=self.package,
        )


def _dpkg_version(package: str) -> str:
    """The package's version as dpkg knows it ("" when it does not, or there is no dpkg to ask)."""
    try:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


def _dpkg_at_least(version: str, minimum: str) -> bool:
    res = subprocess.run(["dpkg", "--compare-versions", version, "ge", minimum], check=False)
    return res.returncode == 0


# Every flag `podman run` and `podman build` get from the engine, and what on the host serves it.
PIECES: tuple[Piece, ...] = (
    Piece(
        "Podman, the container engine",
        "podman",
        (str(podman.INSTALLED),),
        r"podman.*not found",
        command="podman",
    ),
    Piece(
        "runc, the OCI runtime that starts every sandbox and build step",
        "runc",
        ("/usr/bin/runc", "/usr/sbin/runc"),
        # Only what says runc itself is missing: runc's own errors name other files it lacks.
        r'OCI runtime "runc" not found|runc: (executable file )?not found|exec: "runc"',
        command="runc",  # runs' sandboxes start through it, by name
    ),
    Piece(
        "conmon, which watches each container and keeps a service's logs",
        "conmon",
        ("/usr/bin/conmon", "/usr/libexec/podman/conmon"),
        r"conmon.*(not found|no such file)",
    ),
    Piece(
        "catatonit, the init (PID 1) that reaps each sandbox's processes (podman run --init)",
        "catatonit",
        ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit"),
        # Only what says catatonit is not there: catatonit's own errors carry its name too.
        r"container-init binary not found|stat \S*/catatonit: no such file",
    ),
    Piece(
        "the CNI bridge plugins that put sandboxes on their own network",
        "containernetworking-plugins",
        ("/usr/lib/cni/bridge", "/usr/libexec/cni/bridge", "/opt/cni/bin/bridge"),
        r'failed to find plugin "[a-z-]+"',
    ),
    Piece(
        "iptables, which keeps sandboxes away from the host and from each other",
        "iptables",
        ("/usr/sbin/iptables", "/sbin/iptables"),
        r"iptables.*(not found|no such file)",
        command="iptables",
    ),
    Piece(
        "gVisor's runsc, the runtime of sandboxes with isolation: gvisor",
        "runsc",
        ("/usr/bin/runsc", "/usr/sbin/runsc"),
        r"runsc.*(not found|not installed|no such file)",
        # bookworm's own (2022-12) has only the ptrace platform, and a fork bomb crashes its kernel.
        at_least="0.0~20240729",
        install="-t bookworm-backports runsc",
        command="runsc",
    ),
    Piece(
        "mmdebstrap, which builds the base images from Debian packages",
        "mmdebstrap",
        ("/usr/bin/mmdebstrap",),
        r"mmdebstrap.*(not found|no such file)",
        command="mmdebstrap",
    ),
)


def missing_pieces() -> list[Piece]:
    """The pieces this machine lacks, or has where orch cannot run them (`Piece.off_path`)."""
    return [p for p in PIECES if not p.usable()]


def diagnose(output: str) -> HostCheckFailed | None:
    """The missing piece that Podman's error output points at, if it points at one that is
    missing on this machine (`Piece.missing_in`)."""
    for p in PIECES:
        if p.missing_in(output):
            return p.problem()
    return None


def warnings() -> list[str]:
    """What weakens sandboxes on this machine without stopping them, one sentence with its fix
    each. Sandboxes run as the host's uid 1000 with no user namespace (docs/trust.md, "One host
    uid"): when that uid is an account here, whatever runs as it reaches every sandbox."""
    uid = int(SANDBOX_USER.split(":")[0])
    try:
        account = pwd.getpwuid(uid).pw_name
    except KeyError:
        return []
    return [
        f"Every sandbox runs as the host's uid {uid}, which is the account {account} on this "
        f"machine: any process of {account} can read each running sandbox's environment (a run's "
        "secrets included) and signal or trace its processes. Remove that account or give it "
        "another uid, or let no one log in or run anything as it."
    ]


@dataclass
class Report:
    """What the check did: each step's name and seconds, or the problem it found, and what it
    warns of (`warnings`; a check with warnings still passes)."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    problem: OrchError | None = None
    warnings: list[str] = field(default_factory=list)
    # What the failed step saw (its exit, its output's end): the server logs it with the
    # sentence, which quotes one line of it, or names only the missing piece.
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def missing_piece(self) -> bool:
        """The problem is a piece found missing on the host (`Piece.problem` names its package),
        not a step that failed this time."""
        return isinstance(self.problem, HostCheckFailed) and bool(self.problem.details.get("package"))

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "steps": [{"step": name, "seconds": round(sec, 3)} for name, sec in self.steps],
            "problem": self.problem.to_dict() if self.problem else None,
            "warnings": list(self.warnings),
        }


class _StepFailed(Exception):
    """A step's problem, with what the step saw (`Report.output`)."""

    def __init__(self, problem: OrchError, output: str) -> None:
        super().__init__(str(problem))
        self.problem = problem
        self.output = output


SANDBOX_PROOF = "orch-sandbox-ok"
_BUILD_COMMAND = "python3 -c \"print('build step ok')\""
# Machine-wide and gone at reboot, like the other marks of the machine's state (/run is root's).
PASSED_PATH = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run") / "orch-host-check.passed"


def run(
    platform: Platform, on_step: Callable[[str, float], None] | None = None, *, fresh: bool = True
) -> Report:
    """Check this machine; never raises for what it finds (the report carries it). With
    `fresh=False` (a server's start) the sandbox and the build step are skipped when they passed
    before on this machine as it is now (same pieces, same engine settings, same base image)."""
    report = Report(warnings=warnings())

    def step(name: str, fn: Callable[[], None]) -> bool:
        start = time.monotonic()
        try:
            fn()
        except _StepFailed as e:
            report.problem, report.output = e.problem, e.output
            return False
        except OrchError as e:
            report.problem = e
            return False
        took = time.monotonic() - start
        report.steps.append((name, took))
        if on_step:
            on_step(name, took)
        return True

    def pieces() -> None:
        if gone := missing_pieces():
            raise gone[0].problem()

    networks = platform.engine.prepare
    if not (step("host packages", pieces) and step("sandbox networks and isolation rules", networks)):
        return report
    mark = _fingerprint(platform.engine)
    if not fresh and mark and _passed_before(mark):
        report.steps.append(("a sandbox and a build step (passed before; nothing changed since)", 0.0))
        return report
    if (
        step("a sandbox (init, limits, a root of its own, sandbox network)", lambda: _sandbox(platform))
        and step("a build step", lambda: _build_step(platform))
        and mark
    ):
        _remember(mark)
    return report


def _fingerprint(engine: Engine) -> str:
    """What a passing check depends on: the host pieces' files, the engine's settings and the
    base image. Empty when the image is missing (the check then fails anyway)."""
    info = engine.inspect_image(base_images.image_tag("python"))
    if info is None:
        return ""
    h = hashlib.sha256(info.id.encode())
    paths = [path for p in PIECES for path in p.paths]
    paths += ["/etc/containers/containers.conf", os.environ.get("CONTAINERS_CONF", "")]
    for path in filter(None, paths):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            h.update(f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _passed_before(mark: str) -> bool:
    try:
        return PASSED_PATH.read_text().strip() == mark
    except OSError:
        return False


def _remember(mark: str) -> None:
    with contextlib.suppress(OSError):  # only a shortcut: a start that cannot keep it checks again
        PASSED_PATH.write_text(mark + "\n")


def _labels(platform: Platform) -> dict[str, str]:
    return {**platform.labels, "org.orch.kind": "check"}


def _image(engine: Engine) -> str:
    tag = base_images.image_tag("python")
    if engine.inspect_image(tag) is None:
        raise HostCheckFailed(
            f"The base image {tag} is missing, so no sandbox can start.",
            "Build it with `orch admin build-images` (scripts/setup does this).",
        )
    return tag


def _sandbox(platform: Platform) -> None:
    engine = platform.engine
    image = _image(engine)
    # What an earlier check left (a server killed mid-check) goes first.
    engine.remove_containers(_labels(platform))
    out: list[bytes] = []
    err: list[bytes] = []
    with tempfile.TemporaryDirectory(prefix="orch-check-") as bundle:
        Path(bundle).chmod(0o755)  # an empty bundle, read by the sandbox user as a run's is
        spec = run_spec(
            # Its process's own: a server's check and an `orch admin check` of the same ORCH_HOME
            # at the same moment tore down each other's sandbox (a launcher takes a sandbox of
            # its name for a gone owner's), and one said the machine could not run sandboxes.
            name=f"{platform.container_prefix}check-{os.getpid()}",
            image=image,
            # The proof is printed by the sandbox user from its writable working directory.
            command=["python3", "-c", f"import os; assert os.getuid() == 1000; print('{SANDBOX_PROOF}')"],
            bundle_dir=Path(bundle),
            deps=Deps(status="none"),
            env={},
            stdin=b"",
            limits=Limits(cpus=0.5, memory_bytes=128 * 2**20, pids=64, timeout=60),
            network=True,
            labels=_labels(platform),
            host_mounts=[Mount(h, c) for h, c in ca_mounts(platform.config).items()],
        )
        # The launcher runs use (the server's default isolation), not Podman's own path.
        launcher = platform.launcher(Isolation(platform.config.isolation))
        result = launcher.run_container(spec, out.append, err.append, timeout=60)
    stdout, stderr = b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")
    if result.exit_code != 0 or SANDBOX_PROOF not in stdout:
        how = f"exit {result.exit_code}" + (", timed out" if result.timed_out else "")
        problem = diagnose(stderr) or HostCheckFailed(
            f"A sandbox could not start here ({how}): {_gist(stderr or stdout)}", _SETUP
        )
        seen = f"the sandbox: {how}; its stderr:\n{_tail(stderr)}"
        raise _StepFailed(problem, seen + (f"\nits stdout:\n{_tail(stdout)}" if stdout.strip() else ""))


def _build_step(platform: Platform) -> None:
    engine = platform.engine
    image = _image(engine)
    tag = f"localhost/orch-check/{platform.instance}-{os.getpid()}:latest"  # as the sandbox's name
    lines: list[str] = []
    request = BuildRequest(
        containerfile=f"FROM {image}\nRUN {_BUILD_COMMAND}\n",
        tag=tag,
        labels=_labels(platform),
        no_cache=True,  # a cached step would prove nothing
        timeout=120,
        owner=platform.instance,
    )
    try:
        engine.build(request, lines.append)
    except OrchError as e:
        text = "\n".join(lines) + "\n" + e.message
        problem = diagnose(text) or HostCheckFailed(
            f"A build step could not run here: {_gist(e.message)}", _SETUP
        )
        raise _StepFailed(problem, f"the build step: {e}\nits log:\n{_tail(text)}") from None
    finally:
        engine.remove_image(tag)


def _gist(text: str) -> str:
    """Podman's own error is its last line of output."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:300]


def _tail(text: str, lines: int = 20) -> str:
    """The end of a step's output, indented for the log."""
    kept = [ln.rstrip()[:300] for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "\n".join(f"  {ln}" for ln in kept) if kept else "  (none)"


# The pause before a server's self-check runs again after a failure, doubled at each failure up
# to the longest (seconds).
RECHECK = 10.0
RECHECK_LONGEST = 600.0


def watch(platform: Platform, say: Callable[[str], None]) -> None:
    """The server's self-check, from its start until it passes (in a thread of its own).

    A piece found missing on the host refuses sandboxes at once (`platform.host_problem`: runs
    fail with its sentence). Any other failure may be the moment's (a busy machine, what a
    killed server left): it is said, and sandboxes are refused only when the check fails again
    RECHECK s later. While a problem stands the check runs again, at pauses that double up to
    RECHECK_LONGEST, and the problem is cleared once it passes: a machine set right (a package
    installed, the load gone) needs no restart. Each sentence is said once, with what the failed
    step saw (the sentence may quote one line of it, or name only the missing piece). Its
    warnings are said once, at the first check."""
    pause = RECHECK
    failures = 0
    while not platform.stopping.is_set():
        report = run(platform, fresh=False)
        if not failures:
            for warning in report.warnings:
                say(f"orch server: warning: {warning}")
        problem = report.problem
        if problem is None:
            if failures:
                refused, platform.host_problem = platform.host_problem, None
                say(
                    "orch server: the machine's self-check passes now"
                    + ("; sandboxes start again." if refused else ".")
                )
            return
        failures += 1
        saw = f"\norch server: what the check saw: {report.output}" if report.output else ""
        if report.missing_piece or failures > 1:
            before, platform.host_problem = platform.host_problem, problem
            if str(before) != str(problem):
                say(f"orch server: no sandbox can start on this machine. {problem}{saw}")
        else:
            say(
                f"orch server: the machine's self-check failed; it runs again in {pause:g} s, and "
                f"sandboxes are refused if it fails again. {problem}{saw}"
            )
        if platform.stopping.wait(pause):
            return
        pause = min(pause * 2, RECHECK_LONGEST)
