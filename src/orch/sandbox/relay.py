"""The relay between a gVisor sandbox's command and its standard output and errors (relay.c).

Under gVisor one large write() to a sandbox's stdout or stderr (the launcher's pipes, which
runsc hands to the sandbox as the host's descriptors) returns a short count once the host pipe
is full, where Linux blocks until all is written: a program that writes once and does not look
at the count lost the rest (Python with PYTHONUNBUFFERED=1 kept the first 64 KiB of a print).
The relay runs the command with pipes of gVisor's own kernel as its stdout and stderr and copies
them to the host's, each piece whole (see relay.c). runc sandboxes need none: there the command
writes to the host's pipes through the host's kernel.

Built like the warm sandboxes' helper (`handoff.build`): once per source, by the machine's C
compiler, under the launcher's state directory.
"""

from __future__ import annotations

from pathlib import Path

from orch.sandbox import handoff

SOURCE = Path(__file__).with_name("relay.c")
Unavailable = handoff.Unavailable


def binary(state: Path) -> Path:
    """The built relay under `state`, built first if missing. Raises Unavailable."""
    return handoff.build(SOURCE, state)
