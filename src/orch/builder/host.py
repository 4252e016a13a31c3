"""What builds and sandboxes borrow from the host: its CA bundle and its proxy settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from orch.config import Config

# Every image of ours trusts the bundle at Debian's standard path; the host's bundle is
# mounted there read-only, so a TLS-inspecting proxy's CA is trusted by pip, uv, npm and apt.
IMAGE_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def ca_mounts(config: Config) -> dict[str, str]:
    bundle = str(config.ca_bundle or "")
    return {bundle: IMAGE_CA_PATH} if bundle and Path(bundle).is_file() else {}


def proxy_env(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host's proxy variables, when passing them on is enabled."""
    if not config.pass_proxy:
        return {}
    env = os.environ if environ is None else environ
    return {k: env[k] for k in PROXY_VARS if env.get(k)}
