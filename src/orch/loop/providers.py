"""The model a loop calls, by its `provider:`."""

from __future__ import annotations

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.anthropic_messages import AnthropicMessages
from orch.loop.endpoints import base_url
from orch.loop.model import Model
from orch.loop.openai_chat import OpenAIChat


def connect(config: LoopConfig, api_key: str | None) -> Model:
    """A client of the loop's endpoint, sending `api_key` (the value of its api_key_secret)."""
    url = base_url(config.provider, config.base_url)
    if config.provider == "anthropic":
        return AnthropicMessages(config.model, url, api_key)
    return OpenAIChat(config.model, url, api_key)
