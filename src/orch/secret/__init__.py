"""Workspace secrets' building blocks, below the use cases (services/secrets.py): what a secret's
name and value may be (`names`), their encryption at rest (`box`), and the masking of their values
in a run's stored output (`mask`). See docs/secrets.md."""
