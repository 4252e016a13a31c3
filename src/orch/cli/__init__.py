"""The `orch` command line: one module per noun, thin over the HTTP client."""

import gc

# A quick command's CPU is mostly imports, whose objects live until it exits: at CPython's
# thresholds (700, 10, 10) the collector walks them again and again, ~5% of `orch env list`.
# Set here, before any of the CLI's imports: fewer collections, not none. `orch server` sets the
# defaults back (GC_DEFAULTS).
GC_DEFAULTS = gc.get_threshold()
gc.set_threshold(10_000, 50, 50)
