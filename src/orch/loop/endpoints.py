"""Which model endpoints a loop may call: the server's `model_endpoints` setting, checked at
publish, so that a workspace cannot make the server send requests to its internal addresses."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from orch.errors import InvalidInput

# Each provider's public endpoint: a loop's base_url when it names none.
DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_url(text: str) -> str | None:
    """Why `text` is not an endpoint's URL (a phrase), or None when it is one."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port  # ValueError for a port out of range
    except ValueError:
        return "is not a URL"
    if port == 0:
        return "names port 0"
    if parts.scheme not in _DEFAULT_PORTS:
        return "is not an http:// or https:// URL"
    if not parts.hostname:
        return "names no host"
    if parts.username is not None or parts.password is not None:
        return "holds a user name or password, which belong in a secret"
    if parts.query or parts.fragment:
        return "has a query or fragment"
    return None


def normalised(url: str) -> str:
    """`url` as compared with the allowed ones: lower-case scheme and host, no default port, no
    trailing slash."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{parts.port}"
    return f"{parts.scheme.lower()}://{host}{parts.path.rstrip('/')}"


def base_url(provider: str, url: str | None) -> str:
    """The URL a loop calls: its own base_url, else its provider's public one."""
    return url or DEFAULT_URLS[provider]


def check_allowed(provider: str, url: str | None, allowed: Sequence[str]) -> str:
    """The loop's endpoint, or InvalidInput listing the allowed ones when it is not one of them."""
    target = base_url(provider, url)
    if normalised(target) in {normalised(a) for a in allowed}:
        return target
    listed = ", ".join(allowed) if allowed else "none"
    named = f"loop.base_url {target}" if url else f"{provider}'s public endpoint {target} (no loop.base_url)"
    raise InvalidInput(
        f"orch.yaml: {named} is not one of this server's allowed model endpoints ({listed}).",
        "Use one of them, or ask the server's administrator to add it to the model_endpoints "
        "setting (ORCH_MODEL_ENDPOINTS, comma-separated).",
    )
