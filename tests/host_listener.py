"""The host's side of the network tests: a TCP listener that records who connected, and the
host's own address. The listener's record is the truth (this machine's egress proxy answers
connections to outside addresses, so a sandbox's own report of "connected" proves nothing)."""

from __future__ import annotations

import socket
import threading


class Listener:
    """A TCP listener on the host, on `host` and a free port, that records its peers."""

    def __init__(self, host: str = "0.0.0.0") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            self.peers.append(addr[0])
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def host_address() -> str:
    """The host's own address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        return str(s.getsockname()[0])
