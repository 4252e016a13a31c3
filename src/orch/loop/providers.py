"""The model a loop calls, by its `provider:`."""

from __future__ import annotations

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.endpoints import base_url
from orch.loop.model import Model


def connect(config: LoopConfig, api_key: str | None) -> Model:
    """A client of the loop's endpoint, sending `api_key` (the value of its api_key_secret).
    The providers' SDKs are imported here, at the first loop run that needs one: together they
    take seconds to import, which every server start (and CLI) would otherwise pay."""
    url = base_url(config.provider, config.base_url)
    if config.provider == "anthropic":
        from orch.loop.anthropic_messages import AnthropicMessages

        return AnthropicMessages(config.model, url, api_key)
    from orch.loop.openai_chat import OpenAIChat

    return OpenAIChat(config.model, url, api_key)
