"""Encryption of client secrets at rest (Fernet), with key rotation.

Keys come from ``ST_PIPELINE_SECRET_KEYS`` (comma-separated Fernet keys) or from the file named
by ``ST_PIPELINE_SECRET_KEYS_FILE`` (one key per line). The first key encrypts; every key
decrypts, so a new key is rolled out by putting it first and re-encrypting.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class SecretKeyError(Exception):
    """The encryption keys are missing or invalid, or a secret cannot be decrypted with them."""


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text)."""
    return Fernet.generate_key().decode()


def load_keys_from_env() -> list[str]:
    """The configured keys, first one first. Raises ``SecretKeyError`` if none is configured."""
    raw = os.environ.get("ST_PIPELINE_SECRET_KEYS", "")
    key_file = os.environ.get("ST_PIPELINE_SECRET_KEYS_FILE")
    if not raw and key_file:
        try:
            raw = Path(key_file).read_text()
        except OSError as exc:
            raise SecretKeyError(
                f"cannot read ST_PIPELINE_SECRET_KEYS_FILE={key_file}: {exc.strerror}"
            ) from None
    keys = [k.strip() for k in raw.replace("\n", ",").split(",") if k.strip()]
    if not keys:
        raise SecretKeyError(
            "no encryption key for tenant credentials: set ST_PIPELINE_SECRET_KEYS to a Fernet key "
            "(create one with `st-pipeline secret-key`) or ST_PIPELINE_SECRET_KEYS_FILE to a file holding it"
        )
    return keys


class SecretBox:
    """Encrypts and decrypts client secrets with the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, TypeError):
                # Never echo the key itself.
                raise SecretKeyError(
                    f"encryption key #{position} is not a valid Fernet key (32 url-safe base64 bytes); "
                    "create one with `st-pipeline secret-key`"
                ) from None
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_env(cls) -> SecretBox:
        return cls(load_keys_from_env())

    def encrypt(self, secret: SecretStr) -> str:
        return self._fernet.encrypt(secret.get_secret_value().encode()).decode()

    def decrypt(self, token: str) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(token.encode()).decode())
        except InvalidToken:
            raise SecretKeyError(
                "a stored client secret cannot be decrypted with the configured keys; "
                "ST_PIPELINE_SECRET_KEYS must include the key it was encrypted with"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt a stored secret with the first (newest) key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored client secret cannot be decrypted with the configured keys") from None
