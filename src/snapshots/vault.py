"""Encryption of stored Stripe secrets (Fernet from `cryptography`).

The master key comes from `SNAPSHOTS_MASTER_KEY`; without it, an embedded SQLite deployment gets
a generated key in a 0600 file beside the database (`<database>.key`). PostgreSQL deployments
share one database across machines, so they must set the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from snapshots import errors
from snapshots.settings import Settings

HOW_TO_MAKE = (
    'make one with: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class Vault:
    def __init__(self, master_key: str | bytes) -> None:
        try:
            self._fernet = Fernet(master_key)
        except (ValueError, TypeError) as exc:
            raise errors.ConfigError(
                f"SNAPSHOTS_MASTER_KEY is not a Fernet key (32 url-safe base64 bytes); {HOW_TO_MAKE}"
            ) from exc

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise errors.ConfigError(
                "a stored secret cannot be decrypted: the master key is not the one it was "
                "encrypted with"
            ) from exc


def key_file(settings: Settings) -> Path | None:
    path = settings.sqlite_path
    return None if path is None else path.with_name(path.name + ".key")


def load(settings: Settings) -> Vault:
    """The vault for these settings, generating the key file on first use (SQLite only)."""
    if settings.master_key:
        return Vault(settings.master_key)
    path = key_file(settings)
    if path is None:
        raise errors.ConfigError(
            "SNAPSHOTS_MASTER_KEY must be set when the database is not a SQLite file; "
            + HOW_TO_MAKE
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Vault(path.read_bytes().strip())
    with os.fdopen(fd, "wb") as f:
        key = Fernet.generate_key()
        f.write(key + b"\n")
    return Vault(key)
