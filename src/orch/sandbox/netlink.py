"""The few rtnetlink requests a sandbox's network needs, over a plain blocking socket: a veth
pair made (its peer put in a namespace, its host end enslaved to a bridge and up in the same
request), links set up or removed, an IPv4 address and a route added. Each request asks for
the kernel's acknowledgement, and a refusal raises `NetlinkError` with its errno.

A netlink socket belongs to the network namespace of the thread that made it: `Socket()` made
inside `nsfs.entered(path)` configures that namespace. (pyroute2 was tried first: its
synchronous API drives an asyncio loop of its own, which fails in a thread whose loop already
runs and under uvloop, both of which the server has.)
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Network

_NETLINK_ROUTE = 0
_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_DELLINK, _RTM_NEWADDR, _RTM_NEWROUTE, _RTM_DELNEIGH = 16, 17, 20, 24, 29
_F_REQUEST, _F_ACK, _F_EXCL, _F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFLA_IFNAME, _IFLA_MASTER, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 3, 10, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_DST, _RTA_GATEWAY = 1, 5
_NDA_DST = 1
_IFF_UP = 0x1
_RT_TABLE_MAIN, _RTPROT_STATIC, _RT_SCOPE_UNIVERSE, _RTN_UNICAST = 254, 4, 0, 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, index, state, flags, type


class NetlinkError(OSError):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _link(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


class Socket:
    """A route netlink socket of the calling thread's network namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> None:
        self._seq += 1
        self._sock.send(
            _HEADER.pack(_HEADER.size + len(body), kind, _F_REQUEST | _F_ACK | flags, self._seq, 0) + body
        )
        while True:
            data = self._sock.recv(65536)
            at = 0
            while at + _HEADER.size <= len(data):
                length, reply, _, seq, _ = _HEADER.unpack_from(data, at)
                if reply == _NLMSG_ERROR and seq == self._seq:
                    (code,) = struct.unpack_from("=i", data, at + _HEADER.size)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return
                at += max(length + (-length % 4), _HEADER.size)

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, master: int) -> None:
        """A veth pair: `name` here, enslaved to the link `master` and up; `peer` in the
        namespace of `peer_netns_fd`, down."""
        peer_attrs = (
            _link()
            + _attr(_IFLA_IFNAME, _name(peer))
            + _attr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        )
        info = _attr(_IFLA_INFO_KIND, b"veth\0") + _attr(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_attrs))
        body = (
            _link(flags=_IFF_UP, change=_IFF_UP)
            + _attr(_IFLA_IFNAME, _name(name))
            + _attr(_IFLA_MASTER, struct.pack("=I", master))
            + _attr(_IFLA_LINKINFO, info)
        )
        self._request(_RTM_NEWLINK, _F_CREATE | _F_EXCL, body)

    def up(self, index: int) -> None:
        self._request(_RTM_NEWLINK, 0, _link(index, _IFF_UP, _IFF_UP))

    def delete(self, name: str) -> bool:
        """Remove the link `name`; False when there is none."""
        try:
            self._request(_RTM_DELLINK, 0, _link() + _attr(_IFLA_IFNAME, _name(name)))
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        return True

    def forget_neighbour(self, index: int, address: IPv4Address) -> None:
        """Drop what the link `index` remembers of `address`'s hardware address (none is fine)."""
        body = _NDMSG.pack(socket.AF_INET, index, 0, 0, 0) + _attr(_NDA_DST, address.packed)
        try:
            self._request(_RTM_DELNEIGH, 0, body)
        except NetlinkError as e:
            if e.errno != errno.ENOENT:
                raise

    def add_address(self, index: int, address: IPv4Address, prefix: int) -> None:
        packed = address.packed
        body = _IFADDR.pack(socket.AF_INET, prefix, 0, _RT_SCOPE_UNIVERSE, index)
        self._request(
            _RTM_NEWADDR, _F_CREATE | _F_EXCL, body + _attr(_IFA_LOCAL, packed) + _attr(_IFA_ADDRESS, packed)
        )

    def add_route(self, destination: IPv4Network, gateway: IPv4Address) -> None:
        body = _RTMSG.pack(
            socket.AF_INET,
            destination.prefixlen,
            0,
            0,
            _RT_TABLE_MAIN,
            _RTPROT_STATIC,
            _RT_SCOPE_UNIVERSE,
            _RTN_UNICAST,
            0,
        )
        if destination.prefixlen:
            body += _attr(_RTA_DST, destination.network_address.packed)
        self._request(_RTM_NEWROUTE, _F_CREATE | _F_EXCL, body + _attr(_RTA_GATEWAY, gateway.packed))
