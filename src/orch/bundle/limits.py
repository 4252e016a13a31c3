"""How big a bundle may be: the same numbers bind `orch publish` and the server."""

MAX_BUNDLE_BYTES = 50 * 1024 * 1024  # total uncompressed size of the files
MAX_FILES = 5000  # entries: files, directories and links
MAX_MANIFEST_BYTES = 1024 * 1024  # orch.yaml is a few lines; a huge one is a mistake or an attack
