"""Images from specs: base images, predefined environments, cache keys and build jobs."""
