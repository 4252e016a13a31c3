"""What a service's deploy is refused for beyond an agent's publish rules: the API checks them,
and `orch service deploy` too, before it packs and sends anything (so this module is light: no
store, no engine)."""

from __future__ import annotations

from orch.errors import InvalidInput

# A `loop:` section is refused before the rest of the manifest is checked: fixing the loop's
# settings first would be for nothing.
LOOP_REFUSED = (
    "managed loops are not supported for services (the platform runs a loop only for a run).",
    "Remove loop: from orch.yaml and give the service an entrypoint to run.",
)
# The longest `--command` (characters): it travels in the deploy's query string, whose length
# the server's HTTP parser bounds too (a far longer one never reaches the API).
MAX_COMMAND = 4096


def check_command(command: str | None) -> None:
    """InvalidInput for a command line longer than MAX_COMMAND."""
    if command is not None and len(command) > MAX_COMMAND:
        raise InvalidInput(
            f"The command is {len(command):,} characters long; a service's command is at most "
            f"{MAX_COMMAND:,}.",
            "Put the long command line in a script of the bundle and run that (or in orch.yaml's "
            "runtime.command).",
        )
