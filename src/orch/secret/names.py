"""What a secret may be called and hold: its name is an environment variable's (the sandbox gets
it as one), its value 1 byte to 64 KiB of UTF-8 text."""

from __future__ import annotations

import re

from orch.errors import InvalidInput

NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
MAX_VALUE_BYTES = 64 * 1024
# How many secrets one workspace holds at most, and how many one agent may ask for.
MAX_SECRETS = 100
# Names no secret may take (names starting with ORCH_ as well), each with the true reason: a
# variable orch sets itself would be overwritten, and one that the loader, a runtime or the shell
# reads would change how every program in the sandbox starts or what it takes itself to be.
_SETS = "orch sets it in every sandbox, so a secret of that name would be overwritten"
_LOADER = (
    "the dynamic loader reads it as every program starts, so a secret there would change how "
    "every program in the sandbox starts"
)
_SHELL = "the shell and programs read it as the sandbox's own state, so a secret there would mislead them"
REASONS = {
    "PATH": _SETS,
    "HOME": _SETS,
    "HOSTNAME": _SETS,
    "TERM": _SETS,
    "USER": _SHELL,
    "PWD": _SHELL,
    "SHELL": _SHELL,
    "PYTHONPATH": (
        "Python reads it as every Python program starts (orch sets it for an agent's "
        "dependencies), so a secret there would change what they import"
    ),
    "NODE_PATH": (
        "Node.js reads it as every Node program starts, so a secret there would change what they load"
    ),
    "LD_PRELOAD": _LOADER,
    "LD_LIBRARY_PATH": _LOADER,
}
RESERVED = frozenset(REASONS)
NAME_FIX = (
    "A secret's name is an environment variable's: 1 to 128 upper-case letters, digits and '_', "
    "not starting with a digit, such as OPENAI_API_KEY."
)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def name_problem(name: object) -> tuple[str, str] | None:
    """Why `name` can't name a secret, as (message, fix); None when it can."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return f"{_shown(name)} is not a secret name.", NAME_FIX
    if name.startswith("ORCH_"):
        return (
            f"{name} starts with ORCH_, which orch reserves for its own variables.",
            "Choose a name without the ORCH_ prefix.",
        )
    if name in RESERVED:
        return (
            f"{name} is a variable that orch sets in every sandbox, so no secret can take its name."
            if REASONS[name] == _SETS
            else f"No secret can be named {name}: {REASONS[name]}.",
            "Choose another name.",
        )
    return None


def check_name(name: str) -> str:
    """`name`, or InvalidInput saying why it can't name a secret."""
    if found := name_problem(name):
        raise InvalidInput(*found)
    return name


def check_value(value: str) -> str:
    """`value`, or InvalidInput saying why it can't be a secret's value (never quoting it)."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            "The secret's value is not valid UTF-8 text.",
            "Store text; for binary data, store it base64-encoded and decode it in the agent.",
        ) from None
    if size == 0:
        raise InvalidInput(
            "The secret's value is empty.",
            "Give a value of 1 byte to 64 KiB; to remove a secret, delete it (`orch secret delete NAME`).",
        )
    if size > MAX_VALUE_BYTES:
        raise InvalidInput(
            f"The secret's value is {size} bytes; a secret holds at most 64 KiB ({MAX_VALUE_BYTES} bytes).",
            "Store a shorter value, such as a key or a token rather than a whole file.",
        )
    if "\x00" in value:
        raise InvalidInput(
            "The secret's value holds a NUL character, which no environment variable can hold.",
            "Remove it; for binary data, store it base64-encoded and decode it in the agent.",
        )
    return value
