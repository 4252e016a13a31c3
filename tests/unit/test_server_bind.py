"""The server's listening sockets: a refused bind is said with the fix for its cause."""

from __future__ import annotations

import pytest

from orch.errors import InvalidInput
from orch.server.main import bind


def test_a_port_in_use_is_said_so() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(InvalidInput) as refused:
            bind("127.0.0.1", taken.getsockname()[1], "--services-port")
        assert "Stop what uses that port, or pass --services-port" in refused.value.fix
    finally:
        taken.close()


def test_an_address_of_another_machine_is_not_a_port_in_use() -> None:
    """Before, every refused bind was told to stop what uses the port."""
    with pytest.raises(InvalidInput) as refused:
        bind("192.0.2.1", 0)  # TEST-NET-1: never this machine's
    assert refused.value.message.startswith("Cannot listen on 192.0.2.1:0: ")
    assert refused.value.fix.startswith("Pass --host an address of this machine")
