"""Network namespaces for sandboxes started by the runc launcher.

- No network: nothing to prepare. The runtime makes a new, empty namespace (only `lo`), as
  `podman run --network none` does.
- The sandbox network: a namespace under /run/netns (`nsfs`) attached to Podman's own CNI
  network (``orch-sandbox``) as its bridge plugin would attach it, with netlink in our own
  process (`veth`; the plugin itself when the bridge does not exist yet, see `cni.for_launcher`).
  The veth ends up on the same bridge as Podman's sandboxes, with an address from the same
  host-local range, so the ORCH-ISOLATION rules (matched by bridge interface) hold for it too;
  NAT and forwarding are static rules for the whole subnet
  (`orch.engine.network.ensure_forwarding`), so no sandbox costs an iptables call.

Attaching still costs some milliseconds of netlink calls, so a `Pool` keeps a few ready. A
namespace is never reused: each sandbox gets a fresh one, destroyed after. Everything is named
after the owner's prefix (the namespace, the CNI container id, a state file with ADD's result), so
`sweep(prefix)` finds what a killed server left: namespaces, address reservations, and the
bridge plugin's NAT rules of namespaces made before the static rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shlex
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.engine import network as forwarding
from orch.errors import EngineError
from orch.sandbox import cni, ipam, nsfs, veth

log = logging.getLogger(__name__)
NETNS_DIR = nsfs.NETNS_DIR
STATE_DIR = Path("/run/orch-runc/netns")


@dataclass(frozen=True)
class Netns:
    """Where a sandbox's network lives. `path` None: a new, empty namespace made by the runtime."""

    name: str = ""
    path: Path | None = None
    network: str = ""  # the CNI network's name
    address: str = ""  # the sandbox's address on it
    gateway: str = ""  # the bridge's address (the host: unreachable from the sandbox)


EMPTY = Netns()


def create(network: cni.Network, name: str, state_dir: Path = STATE_DIR) -> Netns:
    """A new namespace `name` attached to `network`. The state file is written first, so a
    server killed at any point leaves something `sweep` finds."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state = state_dir / f"{name}.json"
    _write_state(state, network.name, None)
    try:
        path = nsfs.add(name, NETNS_DIR)
        try:
            result = veth.attach(network, name, path)
        except veth.Unsupported:
            veth.loopback_up(path)
            result = cni.add(network, name, path)
            with nsfs.entered(path):
                veth.no_ipv6(cni.IFNAME)  # up already, so its link-local address goes now
        _write_state(state, network.name, result)
    except BaseException:
        destroy(name, state_dir)
        raise
    return Netns(name, path, network.name, cni.address(result), cni.gateway(result))


def destroy(name: str, state_dir: Path = STATE_DIR) -> list[str]:
    """Detach (the veth removed, the address given back) and delete the namespace and its state
    file; return what could not be undone (empty when clean). Gone already is fine."""
    state = state_dir / f"{name}.json"
    errors: list[str] = []
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        data = {}
    path = NETNS_DIR / name
    existed = path.exists()
    if data.get("network"):
        errors += veth.detach(str(data["network"]), name, data.get("result"))
        if not existed:
            _drop_masquerade(name)
    try:
        nsfs.delete(name, NETNS_DIR)
    except (EngineError, OSError) as e:
        errors.append(f"network namespace {name}: {e}")
    if not errors:
        state.unlink(missing_ok=True)
    return errors


BEHIND = 8  # used namespaces left to the background destroyer at most (see Pool.release)


@dataclass
class Pool:
    """A few namespaces attached to one network ahead of need, refilled in the background; used
    ones are destroyed in the background too, so neither costs a sandbox's start or end."""

    network_name: str
    prefix: str  # names begin with it: what `sweep(prefix)` removes
    size: int = 2
    state_dir: Path = STATE_DIR
    _ready: list[Netns] = field(default_factory=list)
    _used: list[Netns] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _workers: int = 0  # background threads (filling or destroying) under way
    _filling: bool = False
    _closed: bool = False
    _network: cni.Network | None = None

    def _net(self) -> cni.Network:
        if self._network is None:
            network = cni.for_launcher(cni.load(self.network_name))
            for subnet in cni.subnets(network):
                forwarding.ensure_forwarding(subnet)
            self._network = network
        return self._network

    def _new(self) -> Netns:
        return create(self._net(), f"{self.prefix}net-{secrets.token_hex(4)}", self.state_dir)

    def acquire(self) -> Netns:
        """A ready namespace, or a new one made now when none is ready."""
        with self._lock:
            if self._closed:
                raise EngineError("The network namespace pool is closed.", "Start a new launcher.")
            ns = self._ready.pop() if self._ready else None
        self._refill()
        return ns or self._new()

    def release(self, ns: Netns) -> None:
        """Destroy a namespace after its sandbox, in the background. Never reused: the next
        sandbox gets a fresh one, with nothing of this one's connections or neighbours.

        One background destroyer falls behind when sandboxes end faster than it goes (a burst:
        it shares the interpreter with every run), and each namespace waiting holds an address
        of the network. So beyond `BEHIND` waiting, the caller destroys its own namespace: the
        sandbox's end waits for it, and no number of sandboxes runs the network out of
        addresses."""
        with self._lock:
            if len(self._used) >= BEHIND:
                inline = True
            else:
                inline = False
                self._used.append(ns)
                if len(self._used) > 1:
                    return  # a destroyer is under way and takes this one too
                self._workers += 1
        if inline:
            self._destroy(ns)
            return
        threading.Thread(target=self._destroy_used, name="netns-release", daemon=True).start()

    def _destroy(self, ns: Netns) -> None:
        try:
            errors = destroy(ns.name, self.state_dir)
        except (EngineError, OSError) as e:
            errors = [str(e)]
        if errors:
            log.warning("network namespace %s: %s", ns.name, "; ".join(errors))

    def warm(self) -> None:
        """Fill the pool now (a server start), rather than on the first acquire."""
        self._refill()
        self.wait()

    def wait(self, timeout: float = 120) -> None:
        """Until no background work (filling, destroying) is under way."""
        with self._lock:
            self._lock.wait_for(lambda: not self._workers, timeout=timeout)

    def _refill(self) -> None:
        with self._lock:
            if self._filling or self._closed or len(self._ready) >= self.size:
                return
            self._filling = True
            self._workers += 1
        threading.Thread(target=self._fill, name="netns-pool", daemon=True).start()

    def _fill(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed or len(self._ready) >= self.size:
                        return
                try:
                    ns = self._new()
                except EngineError as e:
                    log.warning("could not prepare a network namespace: %s", e.message)
                    return  # acquire() makes one itself, and raises the error there
                with self._lock:
                    if not self._closed:
                        self._ready.append(ns)
                        continue
                destroy(ns.name, self.state_dir)
                return
        finally:
            self._done(filling=True)

    def _destroy_used(self) -> None:
        # One destroyer at a time: it takes the list's head until the list is empty, and a
        # release() that finds the list non-empty leaves its namespace to it.
        with self._lock:
            ns = self._used[0]
        while True:
            self._destroy(ns)
            with self._lock:
                self._used.pop(0)
                if not self._used:
                    self._workers -= 1
                    self._lock.notify_all()
                    return
                ns = self._used[0]

    def _done(self, filling: bool = False) -> None:
        with self._lock:
            self._workers -= 1
            if filling:
                self._filling = False
            self._lock.notify_all()

    def close(self) -> None:
        """Destroy the ready namespaces, after the background work under way has ended."""
        with self._lock:
            self._closed = True
        self.wait()
        with self._lock:
            ready, self._ready = self._ready, []
        for ns in ready:
            destroy(ns.name, self.state_dir)


def sweep(prefix: str, network_name: str = "orch-sandbox", state_dir: Path = STATE_DIR) -> int:
    """Remove every namespace named `prefix`... with what it holds outside itself (address
    reservations, NAT and firewall rules): what a killed server left. Call it only while the
    owner runs no sandbox. Return how many were removed."""
    # A state file being written when the server was killed is left as NAME.tmp.
    partial = list(state_dir.glob(f"{prefix}*.tmp"))
    names = {p.stem for p in state_dir.glob(f"{prefix}*.json")} | {p.stem for p in partial}
    names |= {p.name for p in NETNS_DIR.glob(f"{prefix}*")} if NETNS_DIR.is_dir() else set()
    for name in names:
        if not (state_dir / f"{name}.json").exists():
            _write_state(state_dir / f"{name}.json", network_name, None)
        destroy(name, state_dir)
    for path in partial:
        path.unlink(missing_ok=True)
    # Reservations without a namespace or state (a kill between the plugins' work and ours).
    with contextlib.suppress(EngineError):
        network = cni.for_launcher(cni.load(network_name))
        for owner in cni.reservations(network, prefix):
            names.add(owner)
            ipam.release(network.name, owner)
            _drop_masquerade(owner)
    return len(names)


def _write_state(path: Path, network: str, result: dict[str, Any] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"network": network, "result": result}))
    tmp.replace(path)


def _drop_masquerade(container_id: str) -> None:
    """The bridge plugin's NAT rule and chain for a container: its DEL finds them only through
    the namespace's addresses, so a namespace that went first leaves them. They carry the
    container id in a comment."""
    marker = f'id: \\"{container_id}\\"'
    for rule in _masquerade_rules(marker):
        args = shlex.split(rule)
        _nat("-D", *args[1:])
        chain = args[args.index("-j") + 1] if "-j" in args else ""
        if chain.startswith("CNI-"):
            _nat("-F", chain)
            _nat("-X", chain)


def _masquerade_rules(marker: str) -> Iterator[str]:
    listed = _nat("-S", "POSTROUTING").stdout.splitlines()
    yield from (line for line in listed if line.startswith("-A ") and marker in line)


def _nat(*args: str) -> subprocess.CompletedProcess[str]:
    args = ("iptables", "-w", "30", "-t", "nat", *args)
    return subprocess.run(args, capture_output=True, text=True, check=False)
