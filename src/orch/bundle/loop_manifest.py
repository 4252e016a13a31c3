"""`loop:` of orch.yaml: a managed-loop agent's model, endpoint, prompt, tools and limits
(docs/loop.md; the loop itself: orch/loop/). Problems are reported like the rest of the
manifest's: the key, its line, a fix."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from orch.bundle.manifest_problems import problem, show
from orch.loop.endpoints import check_url
from orch.secret import names as secret_names
from orch.sizes import format_size, parse_size

Provider = Literal["openai", "anthropic"]
BUILTIN_TOOLS = ("bash", "read_file", "write_file", "edit_file", "list_files")
DEFAULT_SYSTEM = (
    "You work in a Linux sandbox through the tools you are given; your working directory is "
    "/home/user/work, which holds the agent's files. When the task is done, answer with the result."
)
_PROVIDER_FIX = (
    "Write provider: openai (Chat Completions: OpenAI, vLLM, Ollama, llama.cpp, LiteLLM) or "
    "provider: anthropic (the Messages API)."
)
_WHOLE = re.compile(r"\s*[0-9]{1,12}\s*")
# C0, DEL, C1 and Unicode's line breaks: a terminal obeys them when the CLI prints the model (an
# ESC clears the screen of whoever lists the workspace's agents); no name or URL holds one.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What the sentence refusing a base_url leaves out: a user name or password (up to the host's
# last `@`), and a query or fragment, which may hold a key (`?key=...`).
_USER_INFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?.*@", re.DOTALL)
_QUERY = re.compile(r"[?#].*", re.DOTALL)


def _whole(value: object, low: int, high: int, what: str, example: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _WHOLE.fullmatch(value):
        number = int(value)
    if number is None:
        raise problem(f"{show(value)} is not a whole number.", f"Write {what}, such as {example}.")
    if not low <= number <= high:
        raise problem(f"{number} is not between {low} and {high}.", f"Write {what} from {low} to {high}.")
    return number


def _shown_url(text: str) -> str:
    """`text` for a refusal: never the credentials it may hold (`http://***@host/v1`)."""
    text = _USER_INFO.sub(lambda m: f"{m.group(1) or ''}***@", text, count=1)
    return show(_QUERY.sub(lambda m: f"{m.group()[0]}***", text, count=1))


class LoopConfig(BaseModel):
    """`loop:`: the platform runs this model with these tools in the run's sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    provider: Provider
    base_url: str | None = None  # the provider's public URL when absent (endpoints.DEFAULT_URLS)
    api_key_secret: str | None = None  # a workspace secret the platform sends; never in the sandbox
    system: str = DEFAULT_SYSTEM
    tools: tuple[str, ...] = BUILTIN_TOOLS
    max_turns: int = 20  # model calls
    max_tokens: int = 200_000  # input and output tokens of the whole run
    tool_timeout: int = 120  # seconds one tool call may take
    tool_output_limit: int = 16 * 1024  # bytes of a tool's output the model (and the events) get

    @model_validator(mode="before")
    @classmethod
    def _check_required(cls, value: object) -> object:
        # With an unknown key (a misspelt `model:`?), pydantic names it, and what is missing.
        if isinstance(value, dict) and set(value) <= set(cls.model_fields):
            if "model" not in value:
                raise problem(
                    "names no model.", "Add `model: NAME` under loop:, such as gpt-4o-mini or qwen2.5:7b."
                )
            if "provider" not in value:
                raise problem("names no provider.", _PROVIDER_FIX)
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _check_model(cls, value: object) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise problem(f"{show(value)} is not a model name.", "Write the endpoint's name of the model.")
        if _CONTROL.search(value.strip()):
            raise problem(
                f"{show(value)} holds a control character or a line break, which no model name has.",
                "Write the endpoint's name of the model on one line, as plain text.",
            )
        return value.strip()

    @field_validator("provider", mode="before")
    @classmethod
    def _check_provider(cls, value: object) -> str:
        if value not in ("openai", "anthropic"):
            raise problem(f"{show(value)} is not a provider.", _PROVIDER_FIX)
        return str(value)

    @field_validator("base_url", mode="before")
    @classmethod
    def _check_base_url(cls, value: object) -> str | None:
        if value is None:
            return None
        fix = "Write the endpoint's URL, such as http://127.0.0.1:11434/v1."
        if not isinstance(value, str):
            raise problem(f"{show(value)} is not text.", fix)
        # Before check_url: urlsplit drops tabs and line breaks, so `http://h/v\n1` would pass
        # as http://h/v1 (an allowed endpoint) and be kept with its line break.
        if _CONTROL.search(value.strip()):
            raise problem(f"{_shown_url(value)} holds a control character or a line break.", fix)
        if (found := check_url(value)) is not None:
            raise problem(f"{_shown_url(value)} {found}.", fix)
        return value.strip().rstrip("/")

    @field_validator("api_key_secret", mode="before")
    @classmethod
    def _check_secret(cls, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise problem(f"{show(value)} is not a secret name.", secret_names.NAME_FIX)
        if found := secret_names.name_problem(value):
            raise problem(*found)
        return str(value)

    @field_validator("system", mode="before")
    @classmethod
    def _check_system(cls, value: object) -> str:
        if not isinstance(value, str):
            raise problem(f"{show(value)} is not text.", "Write the system prompt as text (`|` for lines).")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _check_tools(cls, value: object) -> tuple[str, ...]:
        known = ", ".join(BUILTIN_TOOLS)
        if not isinstance(value, list | tuple):
            raise problem(f"{show(value)} is not a list of tools.", f"Write a list of some of: {known}.")
        for name in value:
            if name not in BUILTIN_TOOLS:
                raise problem(f"{show(name)} is not a built-in tool.", f"Built-in tools: {known}.")
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise problem(f"{', '.join(twice)} is listed more than once.", "List each tool once.")
        return tuple(value)

    @field_validator("max_turns", mode="before")
    @classmethod
    def _check_turns(cls, value: object) -> int:
        return _whole(value, 1, 1000, "the most model calls of a run", "20")

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _check_tokens(cls, value: object) -> int:
        return _whole(value, 100, 100_000_000, "the most tokens (in and out) of a run", "200000")

    @field_validator("tool_timeout", mode="before")
    @classmethod
    def _check_tool_timeout(cls, value: object) -> int:
        return _whole(value, 1, 3600, "the seconds one tool call may take", "120")

    @field_validator("tool_output_limit", mode="before")
    @classmethod
    def _check_output_limit(cls, value: object) -> int:
        size = parse_size(value) if isinstance(value, str) else value
        low, high = 1024, 1024 * 1024
        if not isinstance(size, int) or isinstance(size, bool):
            raise problem(f"{show(value)} is not a size.", "Write a size such as 16Ki, or a number of bytes.")
        if not low <= size <= high:
            raise problem(
                f"{show(value)} is not between {format_size(low)} and {format_size(high)}.",
                "Write a size from 1Ki to 1Mi.",
            )
        return size

    @model_validator(mode="after")
    def _check_key(self) -> LoopConfig:
        if self.base_url is None and self.api_key_secret is None:
            secret = "OPENAI_API_KEY" if self.provider == "openai" else "ANTHROPIC_API_KEY"
            raise problem(
                f"names no api_key_secret, and {self.provider}'s public endpoint needs a key.",
                f"Add `api_key_secret: {secret}` and set it with `orch secret set {secret}`, or "
                "name a base_url that needs none (a local server).",
            )
        return self
