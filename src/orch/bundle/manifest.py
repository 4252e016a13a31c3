"""`orch.yaml`: what a bundle says about itself. Every key is optional and unknown keys are errors."""

from __future__ import annotations

import re
import shlex
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from orch.bundle.language import language_of
from orch.bundle.limits import MAX_MANIFEST_BYTES
from orch.bundle.loop_manifest import LoopConfig
from orch.bundle.manifest_problems import invalid_manifest, problem, show
from orch.bundle.resources import Resources
from orch.bundle.yaml_source import load_yaml
from orch.errors import InvalidInput
from orch.models import check_name
from orch.secret import names as secret_names
from orch.sizes import format_size

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_REPLICAS = 20  # of one service; each replica has the service's resources


def _text(value: object, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise problem(f"{show(value)} is not text.", f"Write {what} as text, in quotes if need be.")


def _command(value: object, what: str) -> str | None:
    text = _text(value, what)
    if text is None:
        return None
    try:
        words = shlex.split(text)
    except ValueError:
        raise problem(f"{show(text)} has a quote that is never closed.", "Close the quote.") from None
    if not words:
        raise problem("the command is empty.", f"Write {what}, or remove the key.")
    return text


class Runtime(BaseModel):
    """`runtime:`: how the code is started."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | None = None  # run by the sandbox instead of `python ENTRYPOINT` / `node ENTRYPOINT`

    @field_validator("command", mode="before")
    @classmethod
    def _check_command(cls, value: object) -> str | None:
        return _command(value, "the command, such as `python main.py --fast`")


def _env_name(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise problem(
            f"{show(value)} is not a variable name.", "Use letters, digits and '_', not a leading digit."
        )
    if value.startswith("ORCH_"):
        raise problem(f"{value} starts with ORCH_, which orch reserves for itself.", "Choose another name.")
    return value


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as written in YAML, not Python's True
    if isinstance(value, str | int | float):
        return str(value)
    if value is None:
        raise problem("has no value.", 'Write KEY: "" for an empty value.')
    raise problem(f"{show(value)} is not text or a number.", "Write the value as text, in quotes.")


def _secret_name(value: object) -> str:
    if found := secret_names.name_problem(value):
        raise problem(*found)
    return str(value)


EnvName = Annotated[str, BeforeValidator(_env_name)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]
SecretName = Annotated[str, BeforeValidator(_secret_name)]


class Manifest(BaseModel):
    """A parsed `orch.yaml`. `Manifest()` is what a bundle without one gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    entrypoint: str | None = None  # a bundle path ending in .py or .js; detected when absent
    runtime: Runtime = Runtime()
    environment: str | None = None  # a predefined or custom environment, by name or env_ id
    resources: Resources = Resources()
    env: dict[EnvName, EnvValue] = {}
    secrets: list[SecretName] = []  # workspace secrets the sandbox gets as variables (docs/secrets.md)
    network: bool = True  # outbound access; inbound is never allowed
    isolation: str | None = None  # runc or gvisor; the server's `isolation` setting when absent
    run_command: str | None = None  # services only: runs before the command at each start
    public: bool = False  # services only: the proxy answers anyone, without a token (docs/services.md)
    replicas: int = 1  # services only: how many containers serve it, the proxy spreading requests
    loop: LoopConfig | None = None  # a managed-loop agent: the platform runs the model (docs/loop.md)

    @property
    def command(self) -> str | None:
        """`runtime.command`, the command line that replaces the default one."""
        return self.runtime.command

    @property
    def has_loop(self) -> bool:
        return self.loop is not None

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: object) -> str | None:
        name = _text(value, "the agent's name")
        if name is None:
            return None
        try:
            return check_name(name, "Agent name")
        except InvalidInput as exc:
            raise problem(exc.message, exc.fix) from None

    @field_validator("entrypoint", mode="before")
    @classmethod
    def _check_entrypoint(cls, value: object) -> str | None:
        path = _text(value, "the path of the entrypoint")
        if path is None:
            return None
        fix = "Name a file of the bundle by its path from the bundle's top, such as main.py or src/app.js."
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if path.startswith("/") or "\\" in path or ".." in parts or not parts:
            raise problem(f"{show(path)} is not a path inside the bundle.", fix)
        if language_of(path) is None:
            raise problem(f"{show(path)} is neither a .py nor a .js file.", fix)
        return "/".join(parts)

    @field_validator("environment", mode="before")
    @classmethod
    def _check_environment(cls, value: object) -> str | None:
        name = _text(value, "the environment's name or id")
        if name is None:
            return None
        try:
            return check_name(name, "Environment")
        except InvalidInput as exc:
            raise problem(exc.message, exc.fix) from None

    @field_validator("secrets", mode="before")
    @classmethod
    def _check_secrets_list(cls, value: object) -> object:
        example = "Write secrets: [OPENAI_API_KEY], or one `- NAME` line each."
        if value is None:
            raise problem("names no secret.", f"{example} Or remove the key.")
        if isinstance(value, str):
            raise problem(f"{show(value)} is a single value, not a list of names.", example)
        if not isinstance(value, list):
            raise problem(f"{show(value)} is not a list of names.", example)
        if len(value) > secret_names.MAX_SECRETS:
            raise problem(
                f"names {len(value)} secrets; an agent may ask for at most {secret_names.MAX_SECRETS}.",
                "Ask for the secrets the agent uses.",
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _check_secrets_apart(cls, value: list[str], info: ValidationInfo) -> list[str]:
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise problem(f"{', '.join(twice)} is listed more than once.", "List each secret once.")
        both = sorted(set(value) & set(info.data.get("env") or {}))
        if both:
            raise problem(
                f"{', '.join(both)} is also under env:, and a variable comes from one place.",
                "Remove it from env: (the secret's value is set with `orch secret set NAME`).",
            )
        return value

    @field_validator("run_command", mode="before")
    @classmethod
    def _check_run_command(cls, value: object) -> str | None:
        return _command(value, "a command, such as `apt-get install -y ffmpeg`")

    @field_validator("loop")
    @classmethod
    def _check_loop(cls, value: LoopConfig | None, info: ValidationInfo) -> LoopConfig | None:
        runtime = info.data.get("runtime")
        if value is not None and runtime is not None and runtime.command is not None:
            raise problem(
                "a loop agent runs no command of its own: the platform runs the model, and the "
                "tools run in the sandbox.",
                "Remove runtime.command, or remove loop: to run the command instead.",
            )
        if value is not None and value.api_key_secret in info.data.get("secrets", ()):
            raise problem(
                f"{value.api_key_secret} is also under secrets:, which would put the model's key "
                "in the sandbox.",
                "Remove it from secrets: (the platform sends the key to the model itself).",
            )
        return value

    @field_validator("isolation", mode="before")
    @classmethod
    def _check_isolation(cls, value: object) -> str | None:
        if value is None:
            return None
        if value not in ("runc", "gvisor"):
            raise problem(
                f"{show(value)} is not an isolation runtime.",
                "Write isolation: runc (the default) or isolation: gvisor (gVisor's own kernel in between).",
            )
        return str(value)

    @field_validator("replicas", mode="before")
    @classmethod
    def _check_replicas(cls, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPLICAS:
            raise problem(
                f"{show(value)} is not a number of replicas from 1 to {MAX_REPLICAS}.",
                "Write replicas: 2, for example (1, the default, is one container).",
            )
        return value

    @field_validator("network", "public", mode="before")
    @classmethod
    def _check_flag(cls, value: object, info: ValidationInfo) -> bool:
        if not isinstance(value, bool):
            key = info.field_name
            raise problem(f"{show(value)} is not true or false.", f"Write {key}: true or {key}: false.")
        return value


def parse_manifest(
    text: str, filename: str = "orch.yaml", loop_refused: tuple[str, str] | None = None
) -> Manifest:
    """The manifest in `text`; any problem is an InvalidInput naming the file, line and key.
    `loop_refused` (message, fix): a `loop:` section is refused with it before any other key is
    checked (a service can't be a managed loop, whatever its loop's settings)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise InvalidInput(
            f"{filename} is {format_size(len(text))}; a manifest is at most "
            f"{format_size(MAX_MANIFEST_BYTES)}.",
            "Keep only the manifest's keys in it.",
        )
    source = load_yaml(text, filename)
    duplicate = source.duplicate_key()
    if duplicate is not None:
        path, line, first = duplicate
        raise InvalidInput(
            f"{filename} line {line}: {'.'.join(path)}: the key is also on line {first}.", "Keep one of them."
        )
    if source.data is None:
        return Manifest()
    if not isinstance(source.data, dict):
        raise InvalidInput(
            f"{filename} line {source.line_of(())}: the manifest is a {_kind(source.data)}, "
            "not a mapping of keys.",
            "Write `key: value` lines, such as `name: my-agent` and `entrypoint: main.py`.",
        )
    if loop_refused is not None and "loop" in source.data:
        message, fix = loop_refused
        raise InvalidInput(f"{filename} line {source.line_of(('loop',))}: loop: {message}", fix)
    data = source.data
    if "loop" in data and data["loop"] is None:
        # `loop:` with its keys commented out, or `loop: ~`, is a loop that names nothing, as
        # `loop: {}` is: refused alike, not taken as no loop (a main.py ran as a code agent). A
        # stored manifest's `"loop": null` is no loop: it is read by model_validate_json.
        data = {**data, "loop": {}}
    try:
        return Manifest.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise invalid_manifest(exc, source, filename, _KNOWN_KEYS) from None


# The keys each mapping accepts, named in the fix of an "unknown key" error.
_KNOWN_KEYS: dict[tuple[str, ...], list[str]] = {
    (): [f.alias or n for n, f in Manifest.model_fields.items()],
    ("runtime",): [f.alias or n for n, f in Runtime.model_fields.items()],
    ("resources",): [f.alias or n for n, f in Resources.model_fields.items()],
    ("loop",): list(LoopConfig.model_fields),
}


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "single value"
    return type(value).__name__
