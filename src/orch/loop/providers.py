"""The model a loop calls, by its `provider:`."""

from __future__ import annotations

from orch.bundle.loop_manifest import LoopConfig
from orch.errors import RunFailed
from orch.loop.endpoints import base_url
from orch.loop.model import Model


def connect(config: LoopConfig, api_key: str | None) -> Model:
    """A client of the loop's endpoint, sending `api_key` (the value of its api_key_secret);
    RunFailed, before any request, for a key that no HTTP header can carry (`unsendable`).
    The providers' SDKs are imported here, at the first loop run that needs one: together they
    take seconds to import, which every server start (and CLI) would otherwise pay."""
    if api_key and (why := unsendable(api_key)):
        name = config.api_key_secret or "loop.api_key_secret"
        raise RunFailed(
            f"The API key in the workspace secret {name} (loop.api_key_secret) cannot be sent in an "
            f"HTTP header: {why}.",
            f"Set it again as the provider gave it, from a file or a pipe: orch secret set {name} < key.txt",
        )
    url = base_url(config.provider, config.base_url)
    if config.provider == "anthropic":
        from orch.loop.anthropic_messages import AnthropicMessages

        return AnthropicMessages(config.model, url, api_key)
    from orch.loop.openai_chat import OpenAIChat

    return OpenAIChat(config.model, url, api_key)


def unsendable(key: str) -> str | None:
    """Why an HTTP header cannot carry `key` (a phrase that quotes none of it), or None when it
    can: a header's value is visible ASCII, with spaces between its words only. Decision: a key
    is sent as the secret holds it, never trimmed (docs/secrets.md: a value is what was set, a
    line ending at its end too), so a key with one fails the run at once, naming the secret,
    rather than every request failing in the HTTP library, whose error would quote the key."""
    if key[-1] in "\r\n":
        return "it ends with a line break"
    if any(c in "\r\n" for c in key):
        return "it holds a line break"
    if any(c < " " or c == "\x7f" for c in key):
        return "it holds a control character (a tab, say)"
    if not key.isascii():
        return "it holds a character that is not ASCII"
    if key[0] == " " or key[-1] == " ":
        return "it begins or ends with a space"
    return None
