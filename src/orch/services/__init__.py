"""Use cases, called by the server's routes and workers; the one layer that writes the store."""
