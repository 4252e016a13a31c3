"""Use cases, called by the server's routes and by the workers."""
