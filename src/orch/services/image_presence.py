"""Whether an image this server found on the machine before is here still.

A run or a sandbox on demand asks the engine for its image once per server process (the tag is
kept in `platform.present_base_tags`), not at each start. An image removed since by hand
(`podman rmi`) must be looked for again, pulled from the registry or built, rather than fail every
start until a restart: `still_here` asks the launcher's image cache (a stat while Podman's image
list is unchanged; the sandbox's start looks the same image up anyway), else the engine."""

from __future__ import annotations

from orch.errors import EngineError
from orch.sandbox.launcher import Isolation
from orch.services.platform import Platform


def still_here(platform: Platform, isolation: Isolation, image: str) -> bool:
    """Whether `image`, found on this machine before, is here still (False: look for it again;
    it is then no longer counted as present)."""
    if image not in platform.present_base_tags:
        return False
    if launcher := platform.launchers.get(isolation):
        try:
            launcher.image_id(image)
        except EngineError:
            platform.present_base_tags.discard(image)
            return False
        return True
    if platform.engine.inspect_image(image) is None:
        platform.present_base_tags.discard(image)
        return False
    return True
