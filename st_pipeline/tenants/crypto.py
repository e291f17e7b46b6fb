"""Encryption of client secrets at rest (Fernet), with key rotation.

Keys come from ``ST_PIPELINE_SECRET_KEYS`` (comma-separated Fernet keys) or from the file named
by ``ST_PIPELINE_SECRET_KEYS_FILE`` (one key per line); see ``st_pipeline.settings``. The first key
encrypts; every key decrypts. A new key is rolled out by putting it first and running
``st-pipeline keys rotate``, after which the old keys can be dropped.

A key is named by its *key id*, the first 8 hex digits of its SHA-256: enough to tell keys apart
in messages, nothing to recover a key from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from st_pipeline.redaction import register_secret
from st_pipeline.settings import Settings, SettingsError


class SecretKeyError(Exception):
    """The encryption keys are missing or invalid, or a secret cannot be decrypted with them."""


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text)."""
    return Fernet.generate_key().decode()


def key_id(key: str) -> str:
    """A short, non-secret name of a key."""
    return hashlib.sha256(key.strip().encode()).hexdigest()[:8]


class SecretBox:
    """Encrypts and decrypts client secrets with the configured keys (``source`` names their variable)."""

    def __init__(self, keys: Sequence[str], source: str = "ST_PIPELINE_SECRET_KEYS") -> None:
        if not keys:
            raise SecretKeyError(f"{source} holds no key; create one with `st-pipeline keys generate`")
        self.source = source
        self._fernets: list[Fernet] = []
        for position, key in enumerate(keys, start=1):
            try:
                self._fernets.append(Fernet(key.encode()))
            except (ValueError, TypeError):
                # Never echo the key itself.
                raise SecretKeyError(
                    f"{source} holds an invalid key (#{position}): not a Fernet key (32 url-safe base64 bytes); "
                    "create one with `st-pipeline keys generate`"
                ) from None
            register_secret(key)
        self.key_ids = [key_id(key) for key in keys]
        self._fernet = MultiFernet(self._fernets)

    @property
    def primary_key_id(self) -> str:
        """The id of the key that encrypts."""
        return self.key_ids[0]

    def encrypt(self, secret: SecretStr) -> str:
        return self._fernet.encrypt(secret.get_secret_value().encode()).decode()

    def decrypt(self, token: str, *, tenant_id: int | None = None) -> SecretStr:
        """The secret of ``token``, registered with the redactor; ``SecretKeyError`` naming the tenant."""
        try:
            plain = self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(self._undecryptable(tenant_id)) from None
        register_secret(plain)
        return SecretStr(plain)

    def key_id_of(self, token: str) -> str | None:
        """The id of the configured key that decrypts ``token``; None if none does."""
        for fernet, kid in zip(self._fernets, self.key_ids, strict=True):
            try:
                fernet.decrypt(token.encode())
            except InvalidToken:
                continue
            return kid
        return None

    def rotate(self, token: str, *, tenant_id: int | None = None) -> str:
        """``token`` re-encrypted with the first (newest) key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(self._undecryptable(tenant_id)) from None

    def _undecryptable(self, tenant_id: int | None) -> str:
        whose = f"tenant {tenant_id}'s stored client secret" if tenant_id is not None else "a stored client secret"
        return (
            f"{whose} cannot be decrypted with the keys in {self.source} (key ids {', '.join(self.key_ids)}); "
            "add the key it was encrypted with"
            + (
                f", or store new credentials with `st-pipeline tenant update-credentials --tenant {tenant_id}`"
                if tenant_id is not None
                else ""
            )
        )


def secret_box_from_settings(settings: Settings) -> SecretBox:
    """The keys of ``ST_PIPELINE_SECRET_KEYS`` or its file; ``SecretKeyError`` naming the variable."""
    try:
        source, keys = settings.encryption_keys()
    except SettingsError as exc:
        raise SecretKeyError(str(exc)) from None
    return SecretBox(keys, source=source)
