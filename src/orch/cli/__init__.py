"""The `orch` command line: one module per noun, thin over the HTTP client."""
