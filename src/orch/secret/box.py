"""Secrets' encryption at rest: AES-256-GCM under the platform's secret key, which is never in the
database. The key is the `secret_key` setting (ORCH_SECRET_KEY) when set, else the key file
$ORCH_HOME/secret.key, which the server makes on its first start (mode 0600).

Each value is sealed with its workspace and name as associated data: a ciphertext copied to
another row (another workspace, another name) does not open."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orch.config import Config, make_home
from orch.errors import InvalidInput

KEY_FILE = "secret.key"
KEY_BYTES = 32
_VERSION = "v1:"  # the ciphertext's format: v1 = base64(nonce of 12 bytes + AES-GCM output)
_NONCE_BYTES = 12
MAKE_KEY = "openssl rand -base64 32"


class Unreadable(Exception):
    """A ciphertext that this key does not open: sealed under another key, or altered."""


@dataclass(frozen=True)
class SecretKey:
    key: bytes = field(repr=False)
    origin: str  # where the key came from, for messages: the setting or the key file's path

    def seal(self, workspace_id: str, name: str, value: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, value.encode("utf-8"), _context(workspace_id, name))
        return _VERSION + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, workspace_id: str, name: str, ciphertext: str) -> str:
        if not ciphertext.startswith(_VERSION):
            raise Unreadable(name)
        try:
            raw = base64.b64decode(ciphertext[len(_VERSION) :], validate=True)
            plain = AESGCM(self.key).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _context(workspace_id, name)
            )
        except (binascii.Error, InvalidTag, ValueError):
            raise Unreadable(name) from None
        return plain.decode("utf-8")


def _context(workspace_id: str, name: str) -> bytes:
    return f"orch-secret\x00{workspace_id}\x00{name}".encode()


def key_path(config: Config) -> Path:
    return config.home / KEY_FILE


def load(config: Config, create: bool = False) -> SecretKey:
    """The platform's key: the setting, else the key file (made now when `create`, if missing).
    A setting that is not a key, or a missing or damaged key file, is an InvalidInput that never
    quotes the key. Only an empty setting is "not set": one of spaces alone is refused, not taken
    as unset, which would use the key file unbeknown to whoever set it."""
    setting = str(config.secret_key or "")
    if setting:
        what = "The secret_key setting (ORCH_SECRET_KEY or config.toml)"
        return SecretKey(_decode(setting.strip(), what), "the secret_key setting")
    path = key_path(config)
    if create and not path.exists():
        _make_key_file(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise InvalidInput(
            f"The secret key file {path} is missing, so no secret can be encrypted or read.",
            "Restart `orch server` to make a new key (secrets set before then must be set again), "
            "or put the old key file back, or set ORCH_SECRET_KEY.",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(
            f"The secret key file {path} cannot be read ({type(e).__name__}).",
            "Check its owner and mode (0600, the server's user), or set ORCH_SECRET_KEY.",
        ) from None
    return SecretKey(_decode(text, f"The secret key file {path}"), str(path))


def loose_key_file(config: Config) -> str | None:
    """What to say when the key file in use is open to users other than its owner (the server
    makes it 0600; a copy or a restore may have widened it). It stays usable: said, not refused."""
    if config.secret_key:
        return None  # the setting is the key; the file is not read
    path = key_path(config)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"The secret key file {path} is open to other users than its owner (mode {mode:04o}): "
        f"whoever reads it can decrypt every stored secret. Run `chmod 600 {path}`."
    )


def _decode(text: str, what: str) -> bytes:
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise InvalidInput(
            f"{what} is not a key: it must be {KEY_BYTES} random bytes in base64 (44 characters).",
            f"Make one with `{MAKE_KEY}`; secrets set under another key must then be set again.",
        )
    return key


def new_key_text() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def _make_key_file(path: Path) -> None:
    """Write a new key to `path`, readable by its owner only; when another process makes it at
    the same moment, its key stays (the file appears whole or not at all)."""
    make_home(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(new_key_text() + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
