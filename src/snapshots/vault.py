"""Encryption of stored Stripe secrets (Fernet from `cryptography`).

The master key comes from `SNAPSHOTS_MASTER_KEY`; without it, an embedded SQLite deployment gets
a generated key in a 0600 file beside the database (`<database>.key`). PostgreSQL deployments
share one database across machines, so they must set the variable.

Rotation (`snapshots rotate-master-key`) re-encrypts every stored secret with a new key in one
transaction. `SNAPSHOTS_MASTER_KEY` may hold several comma-separated keys: the first encrypts,
any of them decrypts (Fernet's MultiFernet), so a deployment can run with `new,old` while the
secrets are re-encrypted. With a key file, the new key waits in `<database>.key.new` until the
re-encryption has committed; a crash in between leaves both files, and both keys are tried.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from snapshots import audit, errors
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database

HOW_TO_MAKE = (
    'make one with: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class Vault:
    def __init__(self, *master_keys: str | bytes) -> None:
        keys = [k.strip() for key in master_keys for k in _split(key) if k.strip()]
        if not keys:
            raise errors.ConfigError(f"SNAPSHOTS_MASTER_KEY is empty; {HOW_TO_MAKE}")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
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
            raise errors.WrongMasterKey(
                "a stored secret cannot be decrypted: the master key is not the one it was "
                "encrypted with (SNAPSHOTS_MASTER_KEY)"
            ) from exc


def _split(key: str | bytes) -> list[str]:
    text = key.decode() if isinstance(key, bytes) else key
    return text.split(",")


def key_file(settings: Settings) -> Path | None:
    path = settings.sqlite_path
    return None if path is None else path.with_name(path.name + ".key")


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".new")


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
        pending = _pending(path)
        if pending.exists():  # a rotation stopped half-way: either key may be the one
            return Vault(pending.read_bytes().strip(), path.read_bytes().strip())
        return Vault(path.read_bytes().strip())
    with os.fdopen(fd, "wb") as f:
        key = Fernet.generate_key()
        f.write(key + b"\n")
    return Vault(key)


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file whole or not at all (a temporary file, then a rename)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def rotate(
    db: Database, settings: Settings, *, new_key: str | None = None, actor: str = "cli"
) -> int:
    """Re-encrypt every stored secret with a new master key; returns how many connections.

    With a key file (SQLite, no SNAPSHOTS_MASTER_KEY) the new key is generated unless given
    and replaces the file once the database has committed. With SNAPSHOTS_MASTER_KEY, give
    `new_key`, or put the new key first in the variable (`new,old`); afterwards set the
    variable to the new key alone."""
    old = load(settings)
    path = None if settings.master_key else key_file(settings)
    if new_key is None:
        keys = _split(settings.master_key or "")
        if path is not None:
            new_key = Fernet.generate_key().decode()
        elif len(keys) > 1:
            new_key = keys[0]
        else:
            raise errors.BadRequest(
                "give the new key (--new-key), or set SNAPSHOTS_MASTER_KEY to `new,old`; "
                + HOW_TO_MAKE
            )
    new = Vault(new_key)
    if path is not None:
        pending = _pending(path)
        if pending.exists():  # an earlier rotation stopped half-way: keep both its keys
            both = pending.read_bytes().strip() + b"," + path.read_bytes().strip()
            _write_private(path, both + b"\n")
            pending.unlink()
        _write_private(pending, new_key.encode() + b"\n")
    t = tables.connections
    with db.write() as tx:
        rows = tx.execute(sa.select(t.c.id, t.c.secret_key, t.c.webhook_secrets)).all()
        for row in rows:
            tx.execute(
                t.update()
                .where(t.c.id == row.id)
                .values(
                    secret_key=new.encrypt(old.decrypt(row.secret_key)),
                    webhook_secrets=new.encrypt(old.decrypt(row.webhook_secrets)),
                )
            )
        # Proof the new key decrypts what was written, before the old one can be dropped.
        for written in tx.execute(sa.select(t.c.secret_key, t.c.webhook_secrets)).all():
            new.decrypt(written.secret_key)
            json.loads(new.decrypt(written.webhook_secrets))
        audit.record(
            tx,
            actor=actor,
            action="vault.master_key_rotated",
            details={"connections": len(rows), "key_file": path is not None},
        )
    if path is not None:
        os.replace(_pending(path), path)
    return len(rows)
