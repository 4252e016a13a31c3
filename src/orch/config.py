"""Settings: one table feeds the CLI, the server, the docs and validation.

Precedence: an ``ORCH_*`` environment variable, then ``$ORCH_HOME/config.toml``, then the default.
The server writes ``url`` and ``token`` into that file on start, so a CLI with the same
``ORCH_HOME`` finds it with no other step.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orch.errors import InvalidInput, OrchError

CONFIG_FILE = "config.toml"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Callable[[Path], Any]
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return f"ORCH_{self.name.upper()}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


MAX_WORKERS = 1024  # threads of one kind a server starts: more only exhausts the machine's


def _workers(text: str) -> int:
    """A count of worker threads: 1 to MAX_WORKERS (each is a thread of the server's)."""
    value = int(text)
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(text)
    return value


MAX_PIDS = 4194304  # the most a pids cgroup's pids.max takes (the kernel's PID_MAX_LIMIT)


def _pids(text: str) -> int:
    """A process limit written to a pids cgroup: 1 to MAX_PIDS (the kernel refuses more, EINVAL)."""
    value = int(text)
    if not 1 <= value <= MAX_PIDS:
        raise ValueError(text)
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


MAX_MEMORY = 2**63  # memory limits are int64s to Podman and the OCI runtime: below 8 EiB


def _memory_size(text: str) -> int:
    """A size such as 12Gi, 8G or 4096Mi (bytes without a unit), 16 MiB at least, below 8 EiB."""
    from orch.sizes import parse_size  # only for a value given: a quick command pays nothing

    size = parse_size(text)
    if size is None or not 16 * 2**20 <= size < MAX_MEMORY:
        raise ValueError(text)
    return size


def _size_or_zero(text: str) -> int:
    """A size such as 20Gi or 8G (bytes without a unit), or 0 for none."""
    from orch.sizes import parse_size

    size = parse_size(text)
    if size is None or 0 < size < 16 * 2**20:
        raise ValueError(text)
    return size


def _isolation(text: str) -> str:
    if text not in ("runc", "gvisor"):
        raise ValueError(text)
    return text


def _urls(text: str) -> tuple[str, ...]:
    """Comma-separated http(s) URLs."""
    urls = tuple(url.strip().rstrip("/") for url in text.split(",") if url.strip())
    for url in urls:
        # urlsplit takes `http://x y` whole, though no client reaches such an address.
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
            raise ValueError(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(url)
        if parts.username is not None or parts.password is not None or parts.port == 0:
            raise ValueError(url)  # no client sends credentials from the address; 0 is no port
        # `port` raises ValueError itself for one that is not a number, or past 65535.
    return urls


def _base_url(text: str) -> str:
    """'' or one http(s) URL without a path, query or fragment."""
    if not text.strip():
        return ""
    urls = _urls(text)
    parts = urlsplit(urls[0]) if len(urls) == 1 else None
    if parts is None or parts.path or parts.query or parts.fragment:
        raise ValueError(text)
    return urls[0]


def _trimmed(text: str) -> str:
    return text.strip()


def _cluster(text: str) -> str:
    """'' or HOST:PORT of a Ray cluster's head (a name, an IPv4 address or a bracketed IPv6 one)."""
    value = text.strip()
    if not value:
        return ""
    host, _, port = value.rpartition(":")
    if (
        not re.fullmatch(_REGISTRY_HOST, value)
        or not host
        or not port.isdigit()
        or not 0 < int(port) <= 65535
    ):
        raise ValueError(text)
    return value


def _file_or_none(text: str) -> str:
    """'' or the path of a file that exists (a CA bundle): a typo would otherwise drop it without
    a word, and show up later as certificate errors far from the cause."""
    value = text.strip()
    if value and not Path(value).is_file():
        raise ValueError(text)
    return value


def _bearer(text: str) -> str:
    """'' or a token a client can send as `Authorization: Bearer TOKEN`: printable ASCII, no space."""
    if text and not re.fullmatch(r"[\x21-\x7e]+", text):
        raise ValueError(text)
    return text


def _strict_bool(text: str) -> bool:
    """A yes or a no; anything else is a mistake, not a no (a typo must not turn a check off)."""
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


# A registry host (a name, an IPv4 address or a bracketed IPv6 one) with an optional port, then
# optional lowercase path components: what an image reference may begin with (OCI distribution).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
_REGISTRY_PATH = r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_REGISTRY = re.compile(_REGISTRY_HOST + _REGISTRY_PATH)


def _registry(text: str) -> str:
    """'' or HOST[:PORT][/PATH] of an OCI registry: no scheme, no tag, no trailing slash."""
    value = text.strip().rstrip("/")
    if value and not _REGISTRY.fullmatch(value):
        raise ValueError(text)
    # A first component with no dot or port is read as a path on Docker Hub, not as a host.
    host = value.split("/", 1)[0]
    if value and not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(text)
    port = re.search(r":([0-9]+)$", host)  # the pattern allows 5 digits: 99999 was taken
    if port and not 0 < int(port[1]) <= 65535:
        raise ValueError(text)
    return value


def memory() -> int:
    """This machine's memory in bytes (4 GiB when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 4 * 2**30


def pid_space() -> int:
    """The process ids this machine has (kernel.pid_max; 32,768 when it does not say)."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 32768


def run_pids_default() -> int:
    """Half of what the sandboxes' host uid may have (their RLIMIT_NPROC) or of the machine's
    process ids, whichever is less: the rest is the services' (the same uid) and the host's."""
    from orch.sandbox import oci  # only here: reading containers.conf is the sandboxes' concern

    return max(1, min(oci.sandbox_nproc(), pid_space()) // 2)


def service_pids_default() -> int:
    """A quarter of what the sandboxes' host uid may have (their RLIMIT_NPROC) or of the
    machine's process ids, whichever is less: services run as the sandboxes' uid, whose other
    half run_pids takes; the last quarter is the host's own processes of that uid."""
    from orch.sandbox import oci

    return max(1, min(oci.sandbox_nproc(), pid_space()) // 4)


def capacity() -> int:
    """How many sandboxes this machine runs at once by default: starting one is CPU work (about
    0.1 s of a core), and each may use its default memory limit (512 MiB) in full."""
    cores = os.cpu_count() or 1
    return max(1, min(4 * cores, memory() // 2 // (512 * 2**20)))


SETTINGS: tuple[Setting, ...] = (
    Setting("url", lambda h: "", str, "Where the CLI reaches the server (written by `orch server`)."),
    Setting(
        "token",
        lambda h: "",
        str,
        "The workspace API token the CLI sends (written on first start).",
    ),
    Setting(
        "database_url",
        lambda h: f"sqlite:///{h / 'orch.db'}",
        str,
        "SQLAlchemy URL of the store: the SQLite file in ORCH_HOME, or postgresql://...",
    ),
    Setting("host", lambda h: "127.0.0.1", str, "Address `orch server` listens on."),
    Setting("port", lambda h: 8750, _port, "Port `orch server` listens on (0 picks a free one)."),
    Setting(
        "services_port",
        lambda h: 8751,
        _port,
        "Port `orch server` serves services on, an origin apart from the API and web UI's "
        "(0 picks a free one).",
    ),
    Setting(
        "services_url",
        lambda h: "",
        _base_url,
        "The services' address as their users reach it, e.g. https://services.example.com ('' for "
        "http://HOST:SERVICES_PORT).",
    ),
    Setting(
        "max_websockets",
        # 48 MiB: what one WebSocket may hold at most (server/proxy_websocket.py, HELD_AT_MOST).
        lambda h: max(16, memory() // 4 // (48 * 2**20)),
        _positive_int,
        "WebSockets the services' proxy holds open at once, to all services; one more is refused "
        "with 503 until some close. Each may hold up to 48 MiB of messages (16 MiB each way, the "
        "one to the service twice); by default as many as a quarter of the machine's memory holds, "
        "at least 16.",
    ),
    Setting(
        "build_timeout",
        lambda h: 1800,
        _positive_int,
        "Seconds before a build is stopped and failed.",
    ),
    Setting("build_workers", lambda h: 1, _workers, "Builds run at the same time."),
    Setting(
        "build_max_size",
        lambda h: 20 * 2**30,
        _size_or_zero,
        "The largest image a build may make, such as 20Gi, and the most its steps may write while "
        "it runs; a build past it is stopped or its image removed, and it fails (0: no limit).",
    ),
    Setting(
        "build_disk_reserve",
        lambda h: 2 * 2**30,
        _size_or_zero,
        "The free space builds leave on the disk of the container storage, such as 2Gi: a build "
        "that brings it below is stopped and fails (0: none).",
    ),
    Setting(
        "build_memory",
        lambda h: 4 * 2**30,
        _memory_size,
        "The memory limit of a build's RUN steps, such as 4Gi: a step past it is killed and the "
        "build fails, saying so.",
    ),
    Setting(
        "build_pids",
        lambda h: 1024,
        _pids,
        "The processes (and threads) a build's RUN steps may have at once: past it a fork fails, "
        "and so does the build, saying so.",
    ),
    Setting(
        "cache_mounts_size",
        lambda h: 10 * 2**30,
        _memory_size,
        "The disk this platform's builds' cache mounts (RUN --mount=type=cache) may take: after "
        "each build that used one, the least recently used that no build uses are removed.",
    ),
    Setting(
        "run_workers",
        lambda h: capacity(),
        _workers,
        "Runs whose sandboxes execute at the same time; more wait queued. By default the machine's "
        "capacity: 4 per core, and at most as many 512 MiB sandboxes as half the memory holds.",
    ),
    Setting(
        "run_memory",
        lambda h: memory() // 2,
        _memory_size,
        "The memory sandboxes may have at once: the sum of the memory limits of runs' sandboxes "
        "and sandboxes on demand. A run whose limit would take the sum over it waits, in the "
        "order they came, until enough has ended (one larger than it all runs alone); a "
        "sandbox's create waits up to 30 s, then is refused. By default half the machine's memory.",
    ),
    Setting(
        "run_pids",
        lambda h: Deferred(run_pids_default),
        _positive_int,
        "The processes (and threads) sandboxes may have at once: the sum of the process limits of "
        "runs' sandboxes, their dependency installs and sandboxes on demand. As run_memory: a "
        "run waits, a sandbox's create waits up to 30 s. By default half of the sandboxes' "
        "RLIMIT_NPROC or of the machine's process ids, whichever is less.",
    ),
    Setting(
        "install_memory",
        lambda h: 2 * 2**30,
        _memory_size,
        "The memory limit of a run's dependency install, which also bounds what it writes (a tmpfs "
        "counted in it); held in run_memory while the install runs.",
    ),
    Setting(
        "deps_cache_size",
        lambda h: 10 * 2**30,
        _memory_size,
        "The disk the dependency cache ($ORCH_HOME/deps) may take: beyond it, the least recently "
        "used installs that no run uses are removed.",
    ),
    Setting(
        "warm_sandboxes",
        lambda h: 4,
        _non_negative_int,
        "Sandboxes each isolation runtime keeps started ahead of need: one per kind of run seen in "
        "the last 2 minutes, a second for the most recent kinds while places are left, so that the "
        "next such run only hands its command over (0: none).",
    ),
    Setting(
        "isolation",
        lambda h: "runc",
        _isolation,
        "How runs are isolated unless an agent's orch.yaml says: runc, or gvisor (gVisor's runsc).",
    ),
    Setting(
        "service_memory",
        lambda h: memory() // 4,
        _memory_size,
        "The memory services may have at once: the sum, over the services that run or are being "
        "deployed, of replicas times their memory limit. A deploy (or a restart of a stopped "
        "service) beyond it is refused (429). By default a quarter of the machine's memory "
        "(run_memory takes half).",
    ),
    Setting(
        "service_pids",
        lambda h: Deferred(service_pids_default),
        _positive_int,
        "The processes services may have at once: the sum of replicas times their process limit "
        "(pids:), refused beyond it as service_memory. By default a quarter of the sandboxes' "
        "RLIMIT_NPROC or of the machine's process ids, whichever is less (run_pids takes half).",
    ),
    Setting(
        "max_service_memory",
        lambda h: memory() // 8,
        _memory_size,
        "The memory a workspace's services may have at once (replicas times memory limit, "
        "summed); a deploy beyond it is refused (429). By default an eighth of the machine's "
        "memory: half of service_memory's default, so that no workspace takes the services' "
        "memory others count on.",
    ),
    Setting(
        "service_start_timeout",
        lambda h: 60,
        _positive_int,
        "Seconds a newly deployed service version has to answer on its port before the deploy fails.",
    ),
    Setting(
        "ca_bundle",
        lambda h: "/etc/ssl/certs/ca-certificates.crt",
        _file_or_none,
        "CA bundle mounted into build steps and sandboxes ('' for none).",
    ),
    Setting(
        "pass_proxy",
        lambda h: True,
        _strict_bool,
        "Pass the host's HTTP(S)_PROXY/NO_PROXY variables into builds and sandboxes: true or false.",
    ),
    Setting(
        "metrics_token",
        lambda h: "",
        _bearer,
        "A secret GET /metrics then requires as 'Authorization: Bearer ...' ('' for none: "
        "whoever reaches the server's address reads the metrics).",
    ),
    Setting(
        "secret_key",
        lambda h: "",
        str,
        "The key that encrypts workspace secrets: 32 bytes in base64 ('' for the key file "
        "$ORCH_HOME/secret.key, made on first start).",
    ),
    Setting(
        "max_sandboxes",
        lambda h: 5,
        _positive_int,
        "Sandboxes on demand a workspace may hold open at once; more are refused (429).",
    ),
    Setting(
        "max_sandbox_memory",
        lambda h: memory() // 4,
        _memory_size,
        "The memory a workspace's sandboxes on demand may hold open at once, the sum of their "
        "memory limits; a create beyond it is refused (429). By default a quarter of the machine's "
        "memory: half of run_memory's default, so that no workspace's sandboxes take the memory "
        "runs and other workspaces count on.",
    ),
    Setting(
        "sandbox_max_timeout",
        lambda h: 86400,
        _positive_int,
        "The longest idle timeout, in seconds, a sandbox on demand may ask for (its default: 600).",
    ),
    Setting(
        "sandbox_lifetime",
        lambda h: 86400,
        _positive_int,
        "Seconds after which a sandbox on demand is removed, however busy it is.",
    ),
    Setting(
        "sandbox_file_limit",
        lambda h: 64 * 1024 * 1024,
        _positive_int,
        "The largest file, in bytes, written into or read from a sandbox on demand in one call.",
    ),
    Setting(
        "request_body_limit",
        lambda h: 8 * 1024 * 1024,
        _positive_int,
        "The largest request body, in bytes, the API reads (JSON and forms); uploads have their own bounds.",
    ),
    Setting(
        "registry",
        lambda h: "",
        _registry,
        "The OCI registry that built images are pushed to and pulled from by digest, as "
        "HOST[:PORT][/PATH] with no scheme, e.g. registry.example.com/team or 127.0.0.1:5000 "
        "('' for none: images stay on the machine that built them).",
    ),
    Setting(
        "registry_tls_verify",
        lambda h: True,
        _strict_bool,
        "Whether pushes and pulls check the registry's TLS certificate: true or false (false only "
        "for a plain-HTTP registry on a trusted network, e.g. one on 127.0.0.1).",
    ),
    Setting(
        "cluster",
        lambda h: "",
        _cluster,
        "The Ray cluster whose orch nodes run this server's builds, runs and services, as HOST:PORT "
        "of its head ('' for none: the server runs them on its own machine). See docs/scale.md.",
    ),
    Setting(
        "node_proxy_port",
        lambda h: 0,
        _port,
        "Port a cluster's node serves the services it holds on, to the cluster's servers, at its "
        "cluster address (0 picks a free one). See docs/scale.md.",
    ),
    Setting(
        "model_endpoints",
        lambda h: ("https://api.openai.com/v1", "https://api.anthropic.com"),
        _urls,
        "The model endpoints a managed loop may call (its base_url), comma-separated; a loop naming "
        "another is refused at publish.",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}

# What each way of parsing takes, for the message when a value is not that.
_FORMS: dict[Callable[[str], Any], str] = {
    str: "any text",
    _trimmed: "any text",
    _positive_int: "a whole number of 1 or more",
    _workers: f"a whole number of 1 to {MAX_WORKERS}",
    _cluster: "HOST:PORT of the Ray cluster's head (e.g. 10.0.0.5:6379; '' for none)",
    _file_or_none: "the path of an existing file ('' for none)",
    _bearer: "printable ASCII without spaces ('' for none)",
    _non_negative_int: "a whole number of 0 or more",
    _port: "a port number from 0 to 65535 (0 picks a free one)",
    _isolation: "runc or gvisor",
    _pids: f"a whole number of 1 to {MAX_PIDS}",
    _memory_size: "a size of 16Mi or more, below 8 EiB, such as 12Gi or 4096Mi",
    _size_or_zero: "a size of 16Mi or more, such as 20Gi, or 0 for no limit",
    _urls: "http(s) URLs, comma-separated, each with a port of 1 to 65535 if any and no user name or "
    "password (e.g. https://api.openai.com/v1)",
    _base_url: "one http(s) URL with no path, a port of 1 to 65535 if any and no user name or password "
    "(e.g. https://services.example.com; '' for none)",
    _strict_bool: "true or false",
    _registry: "HOST[:PORT][/PATH] with no scheme (e.g. registry.example.com/team; '' for none)",
}


class Deferred:
    """A default worked out when first read, not at every load: what only the server needs and
    costs an import a quick command must not pay (`run_pids` reads the sandboxes' limits)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    @functools.cached_property
    def value(self) -> Any:
        return self._make()


@dataclass(frozen=True)
class Config:
    home: Path
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name in _BY_NAME:
            value = self.values[name]
            return value.value if isinstance(value, Deferred) else value
        raise AttributeError(name)

    @property
    def url(self) -> str:
        return str(self.values["url"])

    @property
    def token(self) -> str:
        return str(self.values["token"])

    @property
    def database_url(self) -> str:
        return str(self.values["database_url"])

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    def with_values(self, **changes: Any) -> Config:
        return Config(self.home, {**self.values, **changes})


def load(home: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the settings for ORCH_HOME (env > config file > default)."""
    env = os.environ if environ is None else environ
    home = (home or Path(env.get("ORCH_HOME") or Path.home() / ".orch")).expanduser().resolve()
    from_file = read_file(home / CONFIG_FILE)
    unknown = sorted(set(from_file) - _BY_NAME.keys())
    if unknown:
        raise InvalidInput(
            f"{home / CONFIG_FILE} sets {', '.join(unknown)}, which orch has no setting for.",
            _unknown_fix(unknown[0]),
        )
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if env.get(s.env):
            raw, origin = env[s.env], s.env
            fix = f"Set {s.env} to {_FORMS[s.parse]}, or unset it for the default."
        elif s.name in from_file:
            raw, origin = _text(from_file[s.name]), str(home / CONFIG_FILE)
            fix = (
                f"Give {s.name} in {home / CONFIG_FILE} {_FORMS[s.parse]}, or remove the line "
                "for the default."
            )
            if isinstance(from_file[s.name], list) and s.parse is not _urls:  # `url = [a, b]`
                raise InvalidInput(f"Setting {s.name} in {origin} is a list; it takes one value.", fix)
        else:
            values[s.name] = s.default(home)
            continue
        try:
            values[s.name] = s.parse(raw)
        except ValueError:
            raise InvalidInput(f"Setting {s.name} = {raw!r} (from {origin}) is not valid.", fix) from None
    return Config(home, values)


def _text(value: Any) -> str:
    """A config file's value as the environment would give it: TOML's booleans and numbers as
    they are written, a list as its items comma-separated; each then checked by the setting's
    own parse (a number is not taken as it is: `run_workers = 0` is refused as ORCH_RUN_WORKERS=0
    is)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    return str(value)


def _unknown_fix(name: str) -> str:
    import difflib  # only for a mistake

    close = difflib.get_close_matches(name, _BY_NAME, n=1)
    hint = f"Did you mean {close[0]}? " if close else ""
    return f"{hint}Remove or rename the line; docs/configuration.md lists the settings."


# The most bytes of config.toml read: a settings file is a few lines; more is a mistake (or a
# link to a device), said at once rather than read without end.
CONFIG_BYTES = 1024 * 1024


def read_file(path: Path) -> dict[str, Any]:
    """The settings in TOML file `path` ({} when there is none); a file that can't be read as TOML
    is an InvalidInput that says why and what to do."""
    text = _read_text(path)
    return {} if text is None else _parse(text, path)


def _read_text(path: Path) -> str | None:
    """The text of config file `path`, None when there is none."""
    from orch.reading import read_bounded
    from orch.text import utf8

    too_large = InvalidInput(
        f"{path} is larger than 1 MiB, more than a settings file holds.", "Fix or delete the file."
    )
    try:
        # Looked at before it is opened: opening a FIFO waits for a writer without end, and a
        # device reads as anything (/dev/zero without end, /dev/null as no settings).
        if not stat.S_ISREG(mode := path.stat().st_mode) and not stat.S_ISDIR(mode):
            raise InvalidInput(
                f"{path} is not a regular file (it is, or links to, a pipe, a socket or a device), "
                "so it holds no settings.",
                "Remove it (`orch server` and `orch login` write the file), or make it a file of settings.",
            )
        data = read_bounded(path, CONFIG_BYTES, too_large)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise InvalidInput(
            f"ORCH_HOME {path.parent} is not a directory (it, or one above it, is a file).",
            "Set ORCH_HOME to a directory (orch makes one that is missing), or unset it for ~/.orch.",
        ) from None
    except IsADirectoryError:
        raise InvalidInput(
            f"{path} is a directory, not a settings file.",
            "Remove it (`orch server` and `orch login` write the file), or set ORCH_HOME to another "
            "directory.",
        ) from None
    except OSError as e:
        raise InvalidInput(f"Cannot read {path}: {e.strerror}.", "Make it readable, or delete it.") from None
    return utf8(data, str(path), "Save it as UTF-8 text, or delete it.")


def _parse(text: str, path: Path) -> dict[str, Any]:
    import tomllib  # only with a file to read: ~3 ms of a quick command's start

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"{path} is not valid TOML: {e}.", "Fix or delete the file.") from None


def make_home(home: Path) -> None:
    """Create ORCH_HOME if it is missing, for its owner alone (mode 700): it holds the store, the
    secrets' key and tokens, and runs' output. A home that exists keeps its mode."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_file(path: Path, updates: Mapping[str, Any]) -> None:
    """Set the settings `updates` (text, numbers, booleans) in the TOML config file: only their
    values change, every other line (comments, lists, their order) is kept as it was. The file is
    readable by its owner only (it holds a token), from its first byte on (never written first
    and narrowed after), and replaced whole, never left half written."""
    import tomlkit  # keeps the file's own formatting; only `orch server` and `orch login` write

    text = _read_text(path) or ""
    _parse(text, path)  # a file that is not TOML is said as a read says it, and left as it is
    document = tomlkit.parse(text)
    for key, value in updates.items():
        document[key] = value
    make_home(path.parent)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # left by a kill: it may have another mode
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
            f.write(tomlkit.dumps(document))
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)  # the file it was to replace is as it was
        if e.errno == errno.ENOSPC:
            raise OrchError(
                f"The disk under {path.parent} is full: orch cannot write {path.name} there.",
                "Free space on that disk (`df -h` shows it), then run the command again.",
            ) from None
        raise
