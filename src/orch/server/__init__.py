"""The control plane: FastAPI app, routes, and the background workers it starts."""
