"""Encryption at rest of plugin secrets (Fernet: AES-128-CBC + HMAC-SHA256, from cryptography).

The key is ``SUMMIT_SECRETS_KEY`` (a Fernet key) or, when unset, a key generated once into
``STATE_DIR/secrets.key`` (mode 0600). Losing the key makes stored secrets unreadable; the
operator sets them again.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["SecretBox", "SecretUnreadable"]


class SecretUnreadable(Exception):
    """The ciphertext was made with another key (or was altered)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, key: str | None, state_dir: Path) -> SecretBox:
        if key:
            return cls(key.encode())
        path = state_dir / "secrets.key"
        if not path.exists():
            state_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def open(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise SecretUnreadable("the secret cannot be decrypted with the current key") from None
