"""More than one machine (docs/scale.md): orch nodes that join a Ray cluster and run the store's
work on their own Podman. Nothing here imports Ray at import time: a single machine never needs
it (`pip install 'orch[cluster]'` adds it)."""
