"""Where things are inside a sandbox."""

HOME = "/home/user"  # the sandbox user's home (`user` in the base images), on the root's own overlay
WORKDIR = f"{HOME}/work"  # a sized tmpfs: the agent's files, writable, gone with the sandbox
BUNDLE = "/opt/orch/bundle"  # the published bundle, read-only; copied into WORKDIR at start
BUNDLE_SOURCE = "/opt/orch/source"  # a dependency install's read-only bundle, copied to BUNDLE
DEPS = "/opt/orch/deps"  # cached dependencies, read-only
PYTHON_DEPS = f"{DEPS}/python"
SANDBOX_USER = "1000:1000"  # never root inside a sandbox
PYTHON_DEPS_FILES = ("requirements.txt",)
NODE_DEPS_FILES = ("package.json", "package-lock.json")
SCRATCH = "/tmp"  # noqa: S108 - inside the sandbox, where it is a private, sized tmpfs
